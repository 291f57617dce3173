"""Importance of layers, heads, FFN neurons and hidden channels: which units slicing keeps.

Three scorers, looked up by name (``candidate.importance`` in a space file):

* ``magnitude``: L1 norm of each unit's weights (no data needed);
* ``taylor``: first-order Taylor estimate of the loss change when a unit is removed,
  ``|dL/dg|`` for a gate ``g = 1`` on the unit's output, summed over training batches;
* ``gates``: differentiable slimming (Penkov et al., IEEE ESL 2023): trainable gates on
  heads, FFN neurons and whole layers, trained with the task loss plus a penalty that
  pushes the gated model's expected parameter bytes under a memory budget; the learned
  gate values rank the units.

Every scorer returns the same mapping: ``layers`` (one score per layer), ``heads`` and
``ffn`` (a tensor per layer), ``hidden`` (one per channel; gates and Taylor use magnitude
for hidden channels, which no gate covers).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch.nn import functional as F

from canao import _config
from canao._progress import Progress
from canao.cache import cache_dir
from canao.compress.slicing import magnitude_scores
from canao.models import Encoder
from canao.models.encoder import Block
from canao.space import CandidateSpec
from canao.tasks import Split

Scores = dict[str, Any]
BYTES = 4  # fp32 parameters


@contextmanager
def gated(model: Encoder, init: float) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Attach one trainable gate logit per head, FFN neuron and layer; detach afterwards."""
    logits: dict[str, list[torch.Tensor]] = {"heads": [], "ffn": [], "layers": []}
    for h, f in zip(model.config.heads, model.config.ffn):
        for kind, n in (("heads", h), ("ffn", f), ("layers", 1)):
            logits[kind].append(torch.full((n,), init, requires_grad=True))
    try:
        yield logits
    finally:
        _clear_gates(model)


def _clear_gates(model: Encoder) -> None:
    for module in model.blocks:
        block = cast(Block, module)
        block.attn.head_gate = block.ffn_gate = block.layer_gate = None


def _set_gates(model: Encoder, logits: dict[str, list[torch.Tensor]],
               squash: Callable[[torch.Tensor], torch.Tensor]) -> None:
    for i, module in enumerate(model.blocks):
        block = cast(Block, module)
        block.attn.head_gate = squash(logits["heads"][i])
        block.ffn_gate = squash(logits["ffn"][i])
        block.layer_gate = squash(logits["layers"][i])


def _batches(data: Split, batch_size: int, steps: int, seed: int,
             what: str) -> Iterator[tuple]:
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    with Progress(steps, what, "batch") as progress:
        for _ in range(steps):
            idx = torch.randint(0, len(y), (batch_size,), generator=gen)
            yield x[idx], y[idx]
            progress.update()


def taylor_scores(model: Encoder, data: Split, *, batches: int = 20, batch_size: int = 64,
                  seed: int = 0) -> Scores:
    """``|dL/dg|`` at ``g = 1`` per unit, summed over ``batches`` training batches."""
    model.eval()
    with gated(model, init=1.0) as logits:
        _set_gates(model, logits, squash=lambda t: t)  # the gates are the identity, = 1
        total = {k: [torch.zeros_like(t) for t in v] for k, v in logits.items()}
        for xb, yb in _batches(data, batch_size, batches, seed, "Taylor importance"):
            loss = F.cross_entropy(model(xb), yb)
            grads = torch.autograd.grad(loss, [t for v in logits.values() for t in v])
            flat = iter(grads)
            for k in total:
                for i in range(len(total[k])):
                    total[k][i] += next(flat).abs()
    hidden = magnitude_scores(model)["hidden"]
    return {"layers": torch.cat(total["layers"]), "heads": total["heads"],
            "ffn": total["ffn"], "hidden": hidden}


def unit_bytes(model: Encoder) -> dict[str, Any]:
    """Parameter bytes owned by one head, one FFN neuron, and each layer's fixed part."""
    c = model.config
    d, hd = c.hidden, c.head_dim
    return {"head": BYTES * hd * (4 * d + 3),  # q/k/v rows and biases, o columns
            "neuron": BYTES * (2 * d + 1),  # fc1 row and bias, fc2 column
            "layer_fixed": BYTES * 6 * d,  # two norms, o and fc2 biases
            "total": BYTES * model.num_parameters()}


def train_gates(model: Encoder, data: Split, *, budget_bytes: float, steps: int = 300,
                batch_size: int = 64, lr: float = 0.05, penalty: float = 10.0,
                seed: int = 0) -> tuple[Scores, dict[str, Any]]:
    """Differentiable slimming: learn gates under a memory budget; weights stay frozen.

    The gated model's expected parameter bytes are ``const + sum_l z_l (fixed_l +
    sum_h g_lh * head_bytes + sum_j g_lj * neuron_bytes)``; the loss is the task's
    cross-entropy and a distillation term toward the ungated model (equal weights), plus
    ``penalty * relu(E[bytes] / budget - 1)^2``.

    Returns:
        The scores (final gate values) and a record: budget, expected bytes before and
        after, the loss at the end.
    """
    ub = unit_bytes(model)
    per_layer = [ub["layer_fixed"] + h * ub["head"] + f * ub["neuron"]
                 for h, f in zip(model.config.heads, model.config.ffn)]
    const = ub["total"] - sum(per_layer)
    frozen = [p.requires_grad_(False) for p in model.parameters()]
    model.eval()

    def expected(g: dict[str, list[torch.Tensor]]) -> torch.Tensor:
        total = torch.tensor(float(const))
        for i in range(len(per_layer)):
            inner = ub["layer_fixed"] + ub["head"] * g["heads"][i].sum() + \
                ub["neuron"] * g["ffn"][i].sum()
            total = total + g["layers"][i].sum() * inner
        return total

    try:
        with gated(model, init=3.0) as logits:
            params = [t for v in logits.values() for t in v]
            opt = torch.optim.Adam(params, lr=lr)
            before = float(expected({k: [torch.sigmoid(t).detach() for t in v]
                                     for k, v in logits.items()}))
            loss = torch.tensor(0.0)
            for xb, yb in _batches(data, batch_size, steps, seed, "training slimming gates"):
                _clear_gates(model)
                with torch.no_grad():  # the ungated model, which the gated one must keep
                    reference = F.log_softmax(model(xb), dim=-1)
                _set_gates(model, logits, torch.sigmoid)
                g = {k: [torch.sigmoid(t) for t in v] for k, v in logits.items()}
                over = torch.relu(expected(g) / budget_bytes - 1.0)
                out = model(xb)
                # Task loss plus distillation from the ungated model: labels alone reward
                # any gate that sharpens the logits; the distillation term ties every gate
                # to what its unit contributes.
                kd = F.kl_div(F.log_softmax(out, dim=-1), reference, log_target=True,
                              reduction="batchmean")
                loss = 0.5 * F.cross_entropy(out, yb) + 0.5 * kd + penalty * over**2
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            final = {k: [torch.sigmoid(t).detach() for t in v] for k, v in logits.items()}
    finally:
        for p in frozen:
            p.requires_grad_(True)
    scores = {"layers": torch.cat(final["layers"]), "heads": final["heads"], "ffn": final["ffn"],
              "hidden": magnitude_scores(model)["hidden"]}
    return scores, {"budget_bytes": budget_bytes, "expected_bytes_before": before,
                    "expected_bytes_after": float(expected(final)), "final_loss": float(loss.detach()),
                    "steps": steps}


def scores_to_json(scores: Scores) -> dict[str, Any]:
    return {"layers": scores["layers"].tolist(), "heads": [t.tolist() for t in scores["heads"]],
            "ffn": [t.tolist() for t in scores["ffn"]], "hidden": scores["hidden"].tolist()}


def scores_from_json(data: dict[str, Any]) -> Scores:
    return {"layers": torch.tensor(data["layers"]),
            "heads": [torch.tensor(v) for v in data["heads"]],
            "ffn": [torch.tensor(v) for v in data["ffn"]], "hidden": torch.tensor(data["hidden"])}


def _magnitude(model: Encoder, data: Split, spec: CandidateSpec) -> tuple[Scores, dict[str, Any]]:
    return magnitude_scores(model), {}


def _taylor(model: Encoder, data: Split, spec: CandidateSpec) -> tuple[Scores, dict[str, Any]]:
    return taylor_scores(model, data, batches=spec.taylor_batches, seed=spec.seed), {
        "batches": spec.taylor_batches}


def _gates(model: Encoder, data: Split, spec: CandidateSpec) -> tuple[Scores, dict[str, Any]]:
    s = spec.slimming
    return train_gates(model, data, budget_bytes=s.budget_mb * 1e6, steps=s.steps, lr=s.lr,
                       penalty=s.penalty, seed=spec.seed)


SCORERS: dict[str, Callable[[Encoder, Split, CandidateSpec], tuple[Scores, dict[str, Any]]]] = {}


def register_scorer(name: str,
                    fn: Callable[[Encoder, Split, CandidateSpec], tuple[Scores, dict[str, Any]]]) -> None:
    if name in SCORERS:
        raise ValueError(f"importance scorer '{name}' is already registered")
    SCORERS[name] = fn


for _name, _fn in (("magnitude", _magnitude), ("taylor", _taylor), ("gates", _gates)):
    register_scorer(_name, _fn)


def importance_scores(model: Encoder, base_key: str, data: Split,
                      spec: CandidateSpec) -> tuple[Scores, dict[str, Any]]:
    """Scores by ``spec.importance`` (a :class:`~canao.space.CandidateSpec`), cached per base.

    Data-driven scores are computed once per base and recipe and stored beside the cached
    base (``<cache>/bases/<key>/importance-*.json``), so every trial and worker reuses them.
    """
    kind = spec.importance
    if kind not in SCORERS:
        raise ValueError(f"unknown importance '{kind}'; known: {', '.join(sorted(SCORERS))}")
    if kind == "magnitude":
        return SCORERS[kind](model, data, spec)
    recipe = json.dumps({"kind": kind, "spec": _config.to_dict(spec)}, sort_keys=True)
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    path = cache_dir() / "bases" / base_key / f"importance-{kind}-{digest}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        return scores_from_json(saved["scores"]), saved["record"]
    scores, record = SCORERS[kind](model, data, spec)
    record = {"importance": kind, **record}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"scores": scores_to_json(scores), "record": record}))
    os.replace(tmp, path)
    return scores, record
