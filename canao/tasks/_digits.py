"""The built-in vision task: scikit-learn's bundled 8x8 handwritten digits (1,797 images)."""

from __future__ import annotations

import functools

import numpy as np

from canao.tasks._task import SPLITS, Split, Task

_SEED = 20240611  # fixed forever: changing it changes every cached base and stored accuracy
_FRACTIONS = (0.6, 0.2, 0.2)  # train / validation / test


@functools.cache
def _splits() -> dict[str, Split]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(_SEED)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for label in range(10):  # stratified: every split has every digit in proportion
        idx = rng.permutation(np.flatnonzero(y == label))
        a = round(len(idx) * _FRACTIONS[0])
        b = a + round(len(idx) * _FRACTIONS[1])
        for s, chunk in zip(SPLITS, (idx[:a], idx[a:b], idx[b:])):
            parts[s].append(chunk)
    out = {}
    for s in SPLITS:
        order = np.sort(np.concatenate(parts[s]))
        out[s] = Split(x[order], y[order])
    return out


class DigitsTask(Task):
    name = "digits"
    num_classes = 10
    frontend = "patch"

    def split(self, name: str) -> Split:
        return _splits()[name]

    def image_shape(self) -> tuple[int, int, int]:
        return (1, 8, 8)
