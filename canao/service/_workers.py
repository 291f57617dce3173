"""``canao worker`` processes the service starts, watches and stops.

A run is one request's trials on one study: ``goal`` is the number of COMPLETE trials the
study should hold when it ends. Workers are plain ``canao worker`` processes (the same
command a team runs on other machines against the same database); the study database
stays the only record of trials. A worker killed by a signal the service did not send is
reported in the run's events; when the run's other workers have finished and the study is
short of its goal, the service starts replacement workers for the missing trials (at most
as many rounds as the run has workers). The dead worker's RUNNING trial is failed and
re-run once by whichever worker next starts a trial after ``--grace-s``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canao.service._config import ServiceConfig

log = logging.getLogger(__name__)
STOP_WAIT_S = 30.0  # a stopped worker marks its running trial failed; give it time to


@dataclass
class Worker:
    popen: subprocess.Popen[bytes]
    trials: int
    log: Path
    started: float
    ended: float | None = None
    stopping: bool = False  # the service asked it to stop (its exit is no surprise)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def state(self) -> dict[str, Any]:
        code = self.popen.returncode
        # A worker handles SIGTERM (fails its trial, exits 128 + 15): it was killed by it.
        sig = -code if code is not None and code < 0 else signal.SIGTERM if code == 143 else None
        if code is None:
            status = "running"
        elif code == 0:
            status = "finished"
        elif sig is not None:
            status = "stopped" if self.stopping else "killed"
        else:
            status = "stopped" if self.stopping and code == 130 else "failed"
        return {"pid": self.pid, "trials": self.trials, "state": status, "returncode": code,
                "signal": signal.Signals(sig).name if sig is not None else None,
                "started": self.started, "ended": self.ended, "log": self.log.name}


@dataclass
class Run:
    study: str
    goal: int  # COMPLETE trials the study should hold when the run ends
    requested: int
    width: int  # workers asked for
    workers: list[Worker] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    rounds: int = 0  # rounds of replacement workers started
    stopped: bool = False
    finished: float | None = None

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.popen.returncode is None]

    def event(self, kind: str, message: str, **extra: Any) -> None:
        self.events.append({"time": time.time(), "event": kind, "message": message, **extra})
        (log.warning if kind in ("killed", "failed") else log.info)("study '%s': %s",
                                                                     self.study, message)

    def describe(self) -> dict[str, Any]:
        return {"study": self.study, "active": self.finished is None, "goal": self.goal,
                "requested": self.requested, "width": self.width, "rounds": self.rounds,
                "stopped": self.stopped, "finished": self.finished,
                "workers": [w.state() for w in self.workers], "events": list(self.events)}


def split(trials: int, workers: int) -> list[int]:
    """``trials`` shared out over at most ``workers`` workers, none given zero."""
    n = max(1, min(workers, trials))
    return [trials // n + (1 if i < trials % n else 0) for i in range(n)]


class WorkerPool:
    """The runs this service started, keyed by study; a thread watches their workers."""

    def __init__(self, config: ServiceConfig, complete: Callable[[str], int],
                 poll_s: float = 0.5) -> None:
        self.config = config
        self._complete = complete  # COMPLETE trials of a study, read from the database
        self._poll_s = poll_s
        self._runs: dict[str, Run] = {}
        self._lock = threading.RLock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    # -- requests -------------------------------------------------------------------
    def active(self, study: str) -> bool:
        with self._lock:
            run = self._runs.get(study)
            return run is not None and run.finished is None

    def start(self, study: str, trials: int, workers: int) -> Run:
        """Start ``workers`` workers sharing ``trials`` more COMPLETE trials of ``study``."""
        with self._lock:
            run = Run(study, self._complete(study) + trials, trials, workers)
            self._runs[study] = run
            self._spawn(run, trials, workers)
            return run

    def stop(self, study: str) -> Run | None:
        with self._lock:
            run = self._runs.get(study)
            if run is None:
                return None
            run.stopped = True
            for w in run.live():
                w.stopping = True
                w.popen.send_signal(signal.SIGINT)  # it fails its trial, exits 130 or by SIGINT
            run.event("stop", f"stop asked: {len(run.live())} worker(s) interrupted")
            return run

    def describe(self, study: str) -> dict[str, Any] | None:
        with self._lock:
            run = self._runs.get(study)
            return None if run is None else run.describe()

    # -- processes ------------------------------------------------------------------
    def _spawn(self, run: Run, trials: int, workers: int) -> None:
        folder = self.config.logs / run.study
        folder.mkdir(parents=True, exist_ok=True)
        # The URL goes through the environment, not argv, so `ps` shows no password.
        env = {**os.environ, "CANAO_STORAGE": self.config.storage}
        for share in split(trials, workers):
            path = folder / f"worker-{len(run.workers) + 1}.log"
            cmd = [sys.executable, "-m", "canao.cli", "-q", "worker", "--study", run.study,
                   "--trials", str(share), "--heartbeat-s", str(self.config.heartbeat_s),
                   "--grace-s", str(self.config.grace_s)]
            # Its own session: a Ctrl-C meant for the service reaches workers through stop().
            with path.open("wb") as out:  # the child keeps its own descriptor
                popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            run.workers.append(Worker(popen, share, path, time.time()))
            run.event("started", f"worker {popen.pid} started for {share} trial(s)",
                      pid=popen.pid)

    def _check(self, run: Run) -> None:
        for w in run.workers:
            if w.ended is not None or w.popen.poll() is None:
                continue
            w.ended = time.time()
            s = w.state()
            if s["state"] == "killed":
                run.event("killed", f"worker {w.pid} was killed by {s['signal']}", pid=w.pid)
            elif s["state"] == "failed":
                run.event("failed", f"worker {w.pid} exited with code {s['returncode']}: "
                          f"{_last_line(w.log)}", pid=w.pid)
            else:
                run.event(s["state"], f"worker {w.pid} {s['state']}", pid=w.pid)
        if run.finished is not None or run.live():
            return
        lost = sum(1 for w in run.workers if w.state()["state"] == "killed")
        missing = run.goal - self._complete(run.study) if lost and not run.stopped else 0
        if missing > 0 and run.rounds < run.width:
            run.rounds += 1
            run.event("replacing", f"{lost} worker(s) died; {missing} trial(s) short of the "
                      f"goal: starting replacement worker(s), round {run.rounds}")
            self._spawn(run, missing, run.width)
            return
        run.finished = time.time()
        run.event("done", f"run finished: {len(run.workers)} worker(s) started in all")

    def _watch(self) -> None:
        while not self._halt.wait(self._poll_s):
            with self._lock:
                runs = [r for r in self._runs.values() if r.finished is None]
            for run in runs:
                try:
                    with self._lock:
                        self._check(run)
                except Exception:  # a database hiccup: try again at the next tick
                    log.exception("watching the workers of study '%s'", run.study)

    def start_watching(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="canao-workers", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop every worker (SIGINT, then SIGKILL after ``STOP_WAIT_S``)."""
        self._halt.set()
        with self._lock:
            for study in list(self._runs):
                self.stop(study)
            workers = [w for r in self._runs.values() for w in r.live()]
        end = time.monotonic() + STOP_WAIT_S
        for w in workers:
            try:
                w.popen.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.popen.kill()
                w.popen.wait()


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(empty log)"
