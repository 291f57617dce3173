"""The timing protocol: warm-up, repeats, and a noisy measurement taken again.

One evaluator serves every device: the caller passes the device's timer (a local or remote
VM's ``time_evaluator``, wrapped), and this module decides how often to call it and what to
keep. Every attempt's samples are kept; statistics come from the samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from canao.measure.stats import summarize
from canao.targets import MeasureConfig

# timer(number, repeat, min_repeat_ms, warmup) -> per-repeat mean latency in seconds
Timer = Callable[[int, int, int, int], list[float]]


def measure_latency(timer: Timer, config: MeasureConfig) -> dict[str, Any]:
    """Time with ``config``; a measurement noisier than ``max_cov`` is taken again.

    Up to ``retries`` more attempts are made; the steadiest one is kept and, if even that
    one is above the threshold, flagged ``noisy``. The rejected attempts' samples are kept.
    """
    number = runs_per_repeat(timer, config)
    attempts = []
    for _ in range(1 + config.retries):
        samples = timer(number, config.repeat, config.min_repeat_ms, config.warmup)
        attempts.append(summarize(samples))
        if attempts[-1]["cov"] <= config.max_cov:
            break
    latency = min(attempts, key=lambda a: a["cov"])
    latency["noisy"] = latency["cov"] > config.max_cov
    latency["attempts"] = len(attempts)
    latency["number"] = number
    latency["rejected_samples_ms"] = [a["samples_ms"] for a in attempts if a is not latency]
    return latency


def runs_per_repeat(timer: Timer, config: MeasureConfig) -> int:
    """``config.number``, lowered (never below 1) so that one repeat lasts about
    ``max_repeat_ms`` at most, as three single runs after the warm-up say."""
    if not config.max_repeat_ms:
        return config.number
    one_s = min(timer(1, 3, 0, config.warmup))
    return max(1, min(config.number, int(config.max_repeat_ms / 1e3 / max(one_s, 1e-9))))
