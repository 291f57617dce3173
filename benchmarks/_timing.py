"""Interleaved timing shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_ms(engines: dict[str, Callable[[], object]], *, rounds: int, inner: int,
                   batches: int = 5, warmup: int = 3) -> dict[str, list[float]]:
    """Per-round median latency (ms) of every engine, the engines taking turns each round.

    Taking turns puts every engine under the same background load, which on a shared
    machine matters more than any single figure; compare engines within a round.
    """
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, fn in engines.items():
            for _ in range(warmup):
                fn()
            per = []
            for _ in range(batches):
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                per.append((time.perf_counter() - t0) / inner * 1e3)
            samples[name].append(statistics.median(per))
    return samples
