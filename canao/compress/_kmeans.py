"""1-D k-means: the shared values of a clustered weight tensor (Tabani et al., 2021)."""

from __future__ import annotations

import numpy as np

MAX_CLUSTERS = 256  # indices are stored as uint8


def kmeans_1d(values: np.ndarray, k: int, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on scalars: (uint8 indices, sorted fp32 codebook).

    Centroids start at evenly spaced quantiles (deterministic, no random restarts); on a
    line, assignment is a search among the midpoints between sorted centroids.
    """
    if not 2 <= k <= MAX_CLUSTERS:
        raise ValueError(f"clusters must lie in [2, {MAX_CLUSTERS}], got {k}")
    flat = values.astype(np.float64).ravel()
    centroids = np.unique(np.quantile(flat, (np.arange(k) + 0.5) / k))
    for _ in range(iters):
        idx = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, flat)
        sums = np.bincount(idx, weights=flat, minlength=len(centroids))
        counts = np.bincount(idx, minlength=len(centroids))
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(moved, centroids):
            break
        centroids = np.sort(moved)
    idx = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, flat)
    return idx.astype(np.uint8).reshape(values.shape), centroids.astype(np.float32)
