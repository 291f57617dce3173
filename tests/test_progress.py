"""Progress of long steps: plain lines in a log, silent under -q."""

from __future__ import annotations

import logging

import pytest
import torch

from canao import _progress
from canao.models import Encoder, EncoderConfig
from canao.models.training import train
from canao.tasks import Split


def _split(n: int = 64) -> Split:
    import numpy as np

    rng = np.random.default_rng(0)
    return Split(rng.random((n, 1, 8, 8), dtype=np.float32), rng.integers(0, 4, n))


def test_a_long_training_reports_plain_lines_with_time_left(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(_progress, "LINE_EVERY_S", 0.0)
    torch.manual_seed(0)
    model = Encoder(EncoderConfig(num_classes=4, hidden=16, heads=(1,), ffn=(16,), head_dim=16))
    with caplog.at_level(logging.INFO, logger="canao"):
        train(model, _split(), steps=5, batch_size=8, lr=1e-3, what="training the base")
    lines = [r.getMessage() for r in caplog.records]
    assert any(ln.startswith("training the base: 2/5 steps, about ") and ln.endswith(" s left")
               for ln in lines), lines
    assert any(ln.startswith("training the base: done in") for ln in lines), lines
    caplog.clear()
    _progress.set_enabled(False)  # what `canao -q` does
    try:
        with caplog.at_level(logging.INFO, logger="canao"):
            train(model, _split(), steps=5, batch_size=8, lr=1e-3, what="training the base")
    finally:
        _progress.set_enabled(True)
    assert not caplog.records
    # A short run nobody waits for (a trial's recovery) says nothing at all.
    with caplog.at_level(logging.INFO, logger="canao"):
        train(model, _split(), steps=5, batch_size=8, lr=1e-3)
    assert not caplog.records
