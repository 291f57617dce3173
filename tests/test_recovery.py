"""A killed run recovers at once where it can know: SIGKILL on SQLite, SIGTERM anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from .conftest import FAST_TARGET, TINY_SPACE, run_cli

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState


def _slow_target(tmp_path: Path) -> Path:
    """The fast test profile with a long timing protocol: a trial stays RUNNING for seconds."""
    data = json.loads(FAST_TARGET.read_text())
    data["measure"] = {"warmup": 1, "number": 400, "repeat": 40, "max_cov": 0.5, "retries": 0}
    path = tmp_path / "slow-measure.json"
    path.write_text(json.dumps(data))
    return path


def _start(*args: str) -> subprocess.Popen:
    # A session of its own, so that SIGKILL to the group also ends the build worker (what
    # the kernel's OOM killer or a power cut leaves behind is no process at all).
    return subprocess.Popen([sys.executable, "-m", "canao.cli", "-q", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_running(url: str, name: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
        except KeyError:  # not created yet
            trials = []
        if any(t.state == State.RUNNING and "arch" in t.user_attrs for t in trials):
            return
        time.sleep(0.1)
    raise AssertionError("no trial started")


def test_sigkilled_sqlite_search_is_recovered_at_once_by_the_next_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    proc = _start("search", "--space", str(TINY_SPACE), "--target", str(_slow_target(tmp_path)),
                  "--study", "k", "--storage", url, "--trials", "3",
                  "--artifacts", str(tmp_path / "a"))
    try:
        _wait_running(url, "k", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (killed,) = [t for t in optuna.load_study(study_name="k", storage=url).trials
                 if t.state == State.RUNNING]
    t0 = time.monotonic()
    # The grace period is far longer than the test: only the lock can tell the trial is dead.
    code, text = run_cli("-q", "resume", "--study", "k", "--storage", url, "--trials", "1",
                         "--grace-s", "3600")
    assert code == 0, text
    trials = optuna.load_study(study_name="k", storage=url).trials
    assert not [t for t in trials if t.state == State.RUNNING]
    assert trials[killed.number].state == State.FAIL
    assert "process died" in trials[killed.number].user_attrs["error"]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.state == State.COMPLETE and retry.params == killed.params
    assert time.monotonic() - t0 < 3600
    # Retried once only: resuming again finds nothing to recover.
    code, text = run_cli("-q", "resume", "--study", "k", "--storage", url, "--trials", "1",
                         "--grace-s", "3600")
    assert code == 0, text
    again = optuna.load_study(study_name="k", storage=url).trials
    assert sum(t.system_attrs.get("failed_trial") == killed.number for t in again) == 1


def test_sigterm_fails_the_running_trial_at_once_and_exits_143(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    code, text = run_cli("-q", "search", "--space", str(TINY_SPACE), "--target",
                         str(_slow_target(tmp_path)), "--study", "t", "--storage", url,
                         "--trials", "1", "--artifacts", str(tmp_path / "a"))
    assert code == 0, text
    proc = _start("worker", "--study", "t", "--storage", url, "--trials", "5")
    try:
        _wait_running(url, "t", proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, out
    assert "terminated (SIGTERM)" in out
    trials = optuna.load_study(study_name="t", storage=url).trials
    states = [t.state for t in trials]
    assert State.RUNNING not in states and states[-1] == State.FAIL, states
