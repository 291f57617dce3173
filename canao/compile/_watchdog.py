"""A watchdog on tuning: a workload whose tuning runs too long is recorded and ends the process.

TVM can loop forever building some candidate schedules (seen on a ``max`` reduction of a
dynamically quantised text model); see :mod:`canao.compile._tune`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from canao.compile import STALLED_EXIT
from canao.compile._database import STALLED


@contextlib.contextmanager
def watchdog(db_dir: Path, tasks: dict[str, str], timeout_s: float) -> Iterator[None]:
    """End this process if tuning ``tasks`` (key -> name) outlasts ``timeout_s``.

    TVM's calls release the GIL, so the timer thread runs while a build loops in C++. It
    records the workloads in ``stalled.json`` (the caller holds the database lock, which
    the kernel drops with the process) and exits with :data:`STALLED_EXIT`.
    """
    def stalled() -> None:
        path = db_dir / STALLED
        record = json.loads(path.read_text()) if path.is_file() else {}
        for key, name in tasks.items():
            record[key] = {"task": name, "timeout_s": timeout_s, "at": time.time()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=0, sort_keys=True))
        os.replace(tmp, path)
        print(f"tuning of {', '.join(sorted(tasks.values()))} ran past {timeout_s:g} s "
              "(tuning.task_timeout_s): left to TVM's default schedule from now on",
              file=sys.stderr, flush=True)
        os._exit(STALLED_EXIT)

    timer = threading.Timer(timeout_s, stalled)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
