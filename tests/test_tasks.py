import numpy as np
import pytest

from canao.errors import TaskError
from canao.tasks import SPLITS, get_task


def test_digits_splits_are_fixed_disjoint_and_stratified() -> None:
    t = get_task("digits")
    parts = {s: t.split(s) for s in SPLITS}
    assert sum(len(p) for p in parts.values()) == 1797
    assert [len(parts[s]) for s in SPLITS] == [1078, 359, 360]
    rows = {s: {p.tobytes() for p in parts[s].x} for s in SPLITS}
    # Digits has a few duplicate images; allow those, but the splits must not share many.
    assert len(rows["train"] & rows["test"]) < 5
    for s in SPLITS:
        assert parts[s].x.dtype == np.float32 and parts[s].x.shape[1:] == (1, 8, 8)
        counts = np.bincount(parts[s].y, minlength=10)
        assert counts.min() >= 0.8 * counts.mean()
    assert t.digest() == get_task("digits").digest()


def test_unknown_task_lists_known() -> None:
    with pytest.raises(TaskError, match="unknown task 'mnist'; known tasks: digits"):
        get_task("mnist")
