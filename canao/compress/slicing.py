"""Structured slicing: build a physically smaller encoder from a larger one.

Importance decides *which* layers, heads, FFN neurons and hidden channels survive;
the :class:`~canao.space.ArchConfig` decides *how many*. The result is a fresh
:class:`~canao.models.Encoder` whose tensors are the selected rows and columns of the
base's, plus a record of what was kept (for the trial's description).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, cast

import torch
from torch import nn

from canao.models import Encoder
from canao.models.encoder import Block
from canao.space import ArchConfig


@dataclass(frozen=True)
class Kept:
    """Indices into the base that a candidate keeps (all sorted ascending)."""

    layers: list[int]
    heads: list[list[int]]  # per kept layer
    ffn: list[list[int]]  # per kept layer
    hidden: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "heads": self.heads, "ffn": self.ffn,
                "hidden": self.hidden}


def _l1(t: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    return t.detach().abs().sum(dim=dim)


def magnitude_scores(model: Encoder) -> dict[str, Any]:
    """Weight-magnitude importance (L1) of every layer, head, FFN neuron and hidden channel."""
    c = model.config
    layer, heads, neurons = [], [], []
    hidden = torch.zeros(c.hidden)
    hidden += _l1(model.pos, (0, 1)) + _l1(model.head.weight, 0)
    # (hidden, C, p, p) for patches, (vocab, hidden) for tokens
    w = cast("nn.Conv2d | nn.Embedding", model.embed).weight
    hidden += _l1(w, tuple(range(1, w.dim()))) if c.frontend == "patch" else _l1(w, 0)
    for norm in (model.ln_f, model.emb_norm):
        if norm is not None:
            hidden += _l1(norm.weight, ())
    if model.cls is not None:
        hidden += _l1(model.cls, (0, 1))
    if model.pooler is not None:
        hidden += _l1(model.pooler.weight, 0) + _l1(model.pooler.weight, 1)
    for block, h in zip(model.blocks, c.heads):
        b = cast(Block, block)
        a = b.attn
        per_head = sum(_l1(lin.weight, 1).view(h, c.head_dim).sum(1) for lin in (a.q, a.k, a.v))
        per_head = per_head + _l1(a.o.weight, 0).view(h, c.head_dim).sum(1)
        heads.append(per_head)
        neurons.append(_l1(b.fc1.weight, 1) + _l1(b.fc1.bias, ()) + _l1(b.fc2.weight, 0))
        # A block's weight on the residual stream is what its output projections write.
        layer.append(float(_l1(a.o.weight, (0, 1)) + _l1(b.fc2.weight, (0, 1))))
        for lin in (a.q, a.k, a.v, b.fc1):
            hidden += _l1(lin.weight, 0)
        hidden += _l1(a.o.weight, 1) + _l1(b.fc2.weight, 1)
        hidden += _l1(b.ln1.weight, ()) + _l1(b.ln2.weight, ())
    return {"layers": torch.tensor(layer), "heads": heads, "ffn": neurons, "hidden": hidden}


def _top(scores: torch.Tensor, k: int) -> list[int]:
    # Stable tie-break by index so that equal scores pick the same units in every process.
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def choose(model: Encoder, arch: ArchConfig, scores: dict[str, Any] | None = None) -> Kept:
    """Which units of ``model`` the architecture keeps, by importance."""
    c = model.config
    if arch.layers > c.layers or arch.hidden > c.hidden:
        raise ValueError(f"{arch.describe()} is larger than the base ({c.layers} layers, "
                         f"hidden {c.hidden})")
    s = scores if scores is not None else magnitude_scores(model)
    layers = _top(s["layers"], arch.layers)
    heads, ffn = [], []
    for i, base_i in enumerate(layers):
        if arch.heads[i] > c.heads[base_i] or arch.ffn[i] > c.ffn[base_i]:
            raise ValueError(f"layer {i} of {arch.describe()} is larger than base layer {base_i}")
        heads.append(_top(s["heads"][base_i], arch.heads[i]))
        ffn.append(_top(s["ffn"][base_i], arch.ffn[i]))
    return Kept(layers, heads, ffn, _top(s["hidden"], arch.hidden))


def slice_encoder(model: Encoder, arch: ArchConfig,
                  scores: dict[str, Any] | None = None) -> tuple[Encoder, Kept]:
    """A new, smaller encoder holding the selected slices of ``model``'s weights."""
    kept = choose(model, arch, scores)
    c = model.config
    new = Encoder(replace(c, hidden=arch.hidden, heads=arch.heads, ffn=arch.ffn))
    d = torch.tensor(kept.hidden)
    with torch.no_grad():
        if c.frontend == "patch":
            new_conv, conv = cast(nn.Conv2d, new.embed), cast(nn.Conv2d, model.embed)
            assert new_conv.bias is not None and conv.bias is not None
            assert new.cls is not None and model.cls is not None
            new_conv.weight.copy_(conv.weight[d])  # (hidden, C, p, p)
            new_conv.bias.copy_(conv.bias[d])
            new.cls.copy_(model.cls[..., d])
        else:
            new_emb, emb = cast(nn.Embedding, new.embed), cast(nn.Embedding, model.embed)
            new_emb.weight.copy_(emb.weight[:, d])  # (vocab, hidden)
        new.pos.copy_(model.pos[..., d])
        for name in ("ln_f", "emb_norm"):
            if getattr(new, name) is not None:
                _copy_norm(getattr(new, name), getattr(model, name), d)
        if new.pooler is not None:
            assert model.pooler is not None  # same style as new
            new.pooler.weight.copy_(model.pooler.weight[d][:, d])
            new.pooler.bias.copy_(model.pooler.bias[d])
        new.head.weight.copy_(model.head.weight[:, d])
        new.head.bias.copy_(model.head.bias)
        for new_block, base_i, hs, fs in zip(new.blocks, kept.layers, kept.heads, kept.ffn):
            nb, ob = cast(Block, new_block), cast(Block, model.blocks[base_i])
            # Columns of q/k/v rows (and o columns) that belong to the kept heads.
            inner = torch.tensor([h * c.head_dim + j for h in hs for j in range(c.head_dim)])
            for name in ("q", "k", "v"):
                src, dst = getattr(ob.attn, name), getattr(nb.attn, name)
                dst.weight.copy_(src.weight[inner][:, d])
                dst.bias.copy_(src.bias[inner])
            nb.attn.o.weight.copy_(ob.attn.o.weight[d][:, inner])
            nb.attn.o.bias.copy_(ob.attn.o.bias[d])
            f = torch.tensor(fs)
            nb.fc1.weight.copy_(ob.fc1.weight[f][:, d])
            nb.fc1.bias.copy_(ob.fc1.bias[f])
            nb.fc2.weight.copy_(ob.fc2.weight[d][:, f])
            nb.fc2.bias.copy_(ob.fc2.bias[d])
            _copy_norm(nb.ln1, ob.ln1, d)
            _copy_norm(nb.ln2, ob.ln2, d)
    return new, kept


def _copy_norm(dst: torch.nn.LayerNorm, src: torch.nn.LayerNorm, d: torch.Tensor) -> None:
    dst.weight.copy_(src.weight[d])
    dst.bias.copy_(src.bias[d])
