"""Statistics of latency samples. Every raw sample is kept; these are derived from them."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np


def summarize(samples_s: list[float]) -> dict[str, Any]:
    """Median, p95, mean, min, max (milliseconds) and coefficient of variation."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    mean = float(ms.mean())
    return {
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": mean,
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "cov": float(statistics.pstdev(ms.tolist()) / mean) if mean > 0 else 0.0,
        "samples_ms": [float(v) for v in ms],
    }
