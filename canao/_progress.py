"""Progress of the long steps (base training, fine-tuning, scoring, tuning, final builds).

On a terminal a step shows a bar with what it is doing and an estimate of the time left; in
a log (a worker's, a service's, a pipe) it writes plain ``canao:`` lines at most every
``LINE_EVERY_S`` seconds; under ``canao -q`` it is silent. The CLI sets the mode once.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

log = logging.getLogger("canao")

LINE_EVERY_S = 15.0
_enabled = True


def set_enabled(enabled: bool) -> None:
    """Progress on (the default) or off (``-q``)."""
    global _enabled
    _enabled = enabled


class Progress:
    """``with Progress(total, "training the base", "step") as p: ... p.update()``."""

    def __init__(self, total: int, what: str, unit: str = "step") -> None:
        self.total, self.what, self.unit = total, what, unit
        self.done = 0
        self.t0 = self.last = time.monotonic()
        self.bar: Any = None
        if _enabled and total > 0 and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit=unit, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if _enabled and now - self.last >= LINE_EVERY_S and self.done < self.total:
            self.last = now
            log.info("%s: %s", self.what, self.status())

    def status(self) -> str:
        """``12/40 steps, about 35 s left``."""
        elapsed = time.monotonic() - self.t0
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        eta = f", about {left:.0f} s left" if self.done else ""
        return f"{self.done}/{self.total} {self.unit}s{eta}"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.close()
        if _enabled and kind is None and self.total > 0:
            log.info("%s: done in %.0f s", self.what, time.monotonic() - self.t0)
