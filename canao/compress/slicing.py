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

from canao.models import Encoder, EncoderConfig
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


def sub_state(model: Encoder, kept: Kept) -> dict[str, torch.Tensor]:
    """The tensors of the sub-network ``kept`` selects, named as in a smaller encoder.

    The units are taken in the order ``kept`` lists them (slicing lists them ascending; the
    supernet's reordering lists them by importance). The tensors index ``model``'s
    parameters, so gradients flow back to them (the supernet trains through this); detach
    them to build a standalone model.
    """
    c = model.config
    p = dict(model.named_parameters())
    d = torch.tensor(kept.hidden)
    s: dict[str, torch.Tensor] = {"pos": p["pos"][..., d], "head.weight": p["head.weight"][:, d],
                                  "head.bias": p["head.bias"]}
    if c.frontend == "patch":  # conv weight (hidden, C, p, p)
        s.update({"embed.weight": p["embed.weight"][d], "embed.bias": p["embed.bias"][d],
                  "cls": p["cls"][..., d]})
    else:  # embedding table (vocab, hidden)
        s["embed.weight"] = p["embed.weight"][:, d]
    for norm in ("ln_f", "emb_norm"):
        if getattr(model, norm) is not None:
            s.update({f"{norm}.weight": p[f"{norm}.weight"][d], f"{norm}.bias": p[f"{norm}.bias"][d]})
    if model.pooler is not None:
        s.update({"pooler.weight": p["pooler.weight"][d][:, d], "pooler.bias": p["pooler.bias"][d]})
    for j, (i, hs, fs) in enumerate(zip(kept.layers, kept.heads, kept.ffn)):
        src, dst = f"blocks.{i}.", f"blocks.{j}."
        # Rows of q/k/v (and columns of o) that belong to the kept heads.
        inner = torch.tensor([h * c.head_dim + k for h in hs for k in range(c.head_dim)],
                             dtype=torch.long)
        f = torch.tensor(fs, dtype=torch.long)
        for name in ("q", "k", "v"):
            s[f"{dst}attn.{name}.weight"] = p[f"{src}attn.{name}.weight"][inner][:, d]
            s[f"{dst}attn.{name}.bias"] = p[f"{src}attn.{name}.bias"][inner]
        s[f"{dst}attn.o.weight"] = p[f"{src}attn.o.weight"][d][:, inner]
        s[f"{dst}attn.o.bias"] = p[f"{src}attn.o.bias"][d]
        s[f"{dst}fc1.weight"] = p[f"{src}fc1.weight"][f][:, d]
        s[f"{dst}fc1.bias"] = p[f"{src}fc1.bias"][f]
        s[f"{dst}fc2.weight"] = p[f"{src}fc2.weight"][d][:, f]
        s[f"{dst}fc2.bias"] = p[f"{src}fc2.bias"][d]
        for norm in ("ln1", "ln2"):
            for part in ("weight", "bias"):
                s[f"{dst}{norm}.{part}"] = p[f"{src}{norm}.{part}"][d]
    return s


def sub_config(model: Encoder, kept: Kept) -> EncoderConfig:
    """The shape of the sub-network ``kept`` selects."""
    return replace(model.config, hidden=len(kept.hidden), heads=tuple(map(len, kept.heads)),
                   ffn=tuple(map(len, kept.ffn)))


def extract(model: Encoder, kept: Kept) -> Encoder:
    """A new, physically smaller encoder holding copies of the tensors ``kept`` selects."""
    new = Encoder(sub_config(model, kept))
    with torch.no_grad():
        new.load_state_dict({k: v.detach().clone() for k, v in sub_state(model, kept).items()})
    new.eval()
    return new


def slice_encoder(model: Encoder, arch: ArchConfig,
                  scores: dict[str, Any] | None = None) -> tuple[Encoder, Kept]:
    """A new, smaller encoder holding the selected slices of ``model``'s weights."""
    kept = choose(model, arch, scores)
    return extract(model, kept), kept
