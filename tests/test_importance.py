"""Taylor and slimming-gate importance: inert units score lowest; gates meet their budget."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from canao.compress import slice_encoder
from canao.compress.importance import (
    importance_scores,
    taylor_scores,
    train_gates,
    unit_bytes,
)
from canao.models import Encoder, EncoderConfig
from canao.space import ArchConfig, CandidateSpec
from canao.tasks import Split

from .conftest import run_cli

CFG = EncoderConfig(num_classes=4, hidden=16, heads=(4, 4, 4), ffn=(32, 32, 32), head_dim=8)
DEAD_HEADS, DEAD_LAYER = (1, 3), 1


def _inert_model() -> tuple[Encoder, Split]:
    """A model with two inert heads per layer, half its FFN neurons inert, one inert layer;
    labels come from the model itself so that the live units matter."""
    torch.manual_seed(0)
    m = Encoder(CFG).eval()
    with torch.no_grad():
        for lin in (m.blocks[DEAD_LAYER].attn.o, m.blocks[DEAD_LAYER].fc2):
            lin.weight.zero_()
            lin.bias.zero_()
        for b in m.blocks:
            for h in DEAD_HEADS:
                rows = slice(h * CFG.head_dim, (h + 1) * CFG.head_dim)
                for lin in (b.attn.q, b.attn.k, b.attn.v):
                    lin.weight[rows] = 0
                    lin.bias[rows] = 0
                b.attn.o.weight[:, rows] = 0
            b.fc1.weight[::2] = 0
            b.fc1.bias[::2] = 0
            b.fc2.weight[:, ::2] = 0
        x = torch.randn(512, 1, 8, 8)
        y = m(x).argmax(1)
    return m, Split(x.numpy(), y.numpy())


def test_taylor_scores_are_zero_exactly_for_inert_units() -> None:
    m, data = _inert_model()
    s = taylor_scores(m, data, batches=4)
    assert float(s["layers"][DEAD_LAYER]) == 0.0
    assert all(float(s["layers"][i]) > 0 for i in (0, 2))
    for i in (0, 2):
        assert all(float(s["heads"][i][h]) == 0.0 for h in DEAD_HEADS)
        assert all(float(s["heads"][i][h]) > 0 for h in (0, 2))
        assert torch.all(s["ffn"][i][::2] == 0) and torch.all(s["ffn"][i][1::2] > 0)
    # The gates are gone afterwards: the model computes exactly what it did before.
    assert all(b.layer_gate is None and b.attn.head_gate is None for b in m.blocks)
    small, kept = slice_encoder(m, ArchConfig(hidden=16, heads=(2, 2), ffn=(16, 16)), s)
    assert kept.layers == [0, 2] and kept.heads == [[0, 2], [0, 2]]
    torch.testing.assert_close(small(torch.as_tensor(data.x[:8])), m(torch.as_tensor(data.x[:8])),
                               rtol=1e-5, atol=1e-5)


def test_gates_meet_the_budget_and_close_inert_units_first() -> None:
    m, data = _inert_model()
    full = unit_bytes(m)["total"]
    before = [p.clone() for p in m.parameters()]
    scores, rec = train_gates(m, data, budget_bytes=0.6 * full, steps=200, lr=0.1)
    assert rec["expected_bytes_before"] > 0.9 * full
    assert rec["expected_bytes_after"] <= 0.6 * full * 1.05
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))  # weights frozen
    assert all(p.requires_grad for p in m.parameters())
    for i in (0, 2):
        dead = scores["heads"][i][list(DEAD_HEADS)].mean()
        live = scores["heads"][i][[0, 2]].mean()
        assert dead < live
        assert scores["ffn"][i][::2].mean() < scores["ffn"][i][1::2].mean()
    # Of the three layers, the inert one keeps the fewest expected bytes.
    ub = unit_bytes(m)
    kept = [float(scores["layers"][i]) * (ub["layer_fixed"] + ub["head"] * scores["heads"][i].sum()
                                          + ub["neuron"] * scores["ffn"][i].sum())
            for i in range(3)]
    assert kept[DEAD_LAYER] < min(kept[0], kept[2]), kept


def test_scores_are_cached_with_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    from canao.compress import importance

    m, data = _inert_model()
    spec = dataclasses.replace(CandidateSpec(), importance="taylor", taylor_batches=2)
    key = f"test-base-{uuid.uuid4().hex[:8]}"
    first, rec = importance_scores(m, key, data, spec)

    def scorer_must_not_run(*args: object) -> None:
        raise AssertionError("the cached scores were computed again")

    monkeypatch.setitem(importance.SCORERS, "taylor", scorer_must_not_run)
    again, rec2 = importance_scores(m, key, data, spec)
    assert rec == rec2 == {"importance": "taylor", "batches": 2}
    assert torch.equal(first["layers"], again["layers"])
    # Another base (key) is scored anew: the cache is per base.
    with pytest.raises(AssertionError, match="computed again"):
        importance_scores(m, key + "-other", data, spec)


def test_slim_command_trains_and_reports(tmp_path) -> None:
    from .conftest import TINY_SPACE

    code, text = run_cli("slim", "--space", str(TINY_SPACE), "--budget-mb", "0.02",
                         "--steps", "30")
    assert code == 0, text
    assert "gates trained toward 0.02 MB" in text and "layer 1: gate" in text
