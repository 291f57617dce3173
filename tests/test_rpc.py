"""Measurements on a device behind a real TVM RPC tracker and server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import psutil
import pytest

from .conftest import TINY_SPACE, run_cli

KEY = "canao-test-cpu"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str]) -> subprocess.Popen:
    # A session of its own, so that the process and the workers it forks end together.
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """End a process and every process of its session (TVM's popen workers included)."""
    members = [p for p in psutil.process_iter(["pid"]) if _session(p) == proc.pid]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in members:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(members, timeout=5)
        if not alive:
            break
        members = alive
    proc.wait(timeout=5)


def _session(p: psutil.Process) -> int | None:
    try:
        return os.getsid(p.pid)
    except (ProcessLookupError, PermissionError):
        return None


def _registered(tracker_port: int) -> bool:
    from tvm import rpc

    try:
        t = rpc.connect_tracker("127.0.0.1", tracker_port)
        try:
            return any(s["key"].endswith(KEY) for s in t.summary()["server_info"])
        finally:
            t.close()
    except (OSError, RuntimeError):
        return False


@pytest.fixture
def rpc_device(tmp_path: Path) -> Iterator[dict]:
    tport = _free_port()
    tracker = _start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tport),
                      "--port-end", str(tport + 1)])
    sport = _free_port()
    server = _start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(sport),
                     "--port-end", str(sport + 1), "--tracker", f"127.0.0.1:{tport}",
                     "--key", KEY])
    started = [tracker, server]
    try:
        deadline = time.monotonic() + 60
        while not _registered(tport):
            assert time.monotonic() < deadline, "RPC server never registered with the tracker"
            time.sleep(0.5)
        profile = tmp_path / "remote.json"
        profile.write_text(json.dumps({
            "version": 1, "target": {"kind": "llvm"}, "threads": 1,
            "measure": {"warmup": 1, "number": 3, "repeat": 5, "max_cov": 0.5, "retries": 0},
            "tuning": {"rung": "untuned", "final_trials_per_task": 0},
            "rpc": {"tracker": f"127.0.0.1:{tport}", "key": KEY, "device_wait_s": 3,
                    "session_timeout_s": 120, "retries": 1},
        }))
        yield {"profile": profile, "server": server, "tracker_port": tport}
    finally:
        for proc in reversed(started):
            _stop(proc)
        leftover = [p for p in psutil.process_iter(["pid"]) if _session(p) in
                    {tracker.pid, server.pid}]
        assert not leftover, f"processes left running: {leftover}"


@pytest.mark.slow
def test_search_measures_on_the_remote_device_and_survives_losing_it(
        rpc_device: dict, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    code, text = run_cli("-q", "search", "--space", str(TINY_SPACE), "--target",
                         str(rpc_device["profile"]), "--study", "remote", "--storage", url,
                         "--trials", "1", "--artifacts", str(tmp_path / "a"))
    assert code == 0, text
    (t,) = optuna.load_study(study_name="remote", storage=url).trials
    assert t.state == optuna.trial.TrialState.COMPLETE
    assert t.user_attrs["machine"] and t.user_attrs["max_abs_error"] < 1e-4
    # The study's device is the remote one, its CPU read through the RPC session.
    from canao import study as st

    device = st.load("remote", url).device
    assert device is not None and device.where == f"rpc:{KEY}" and KEY in device.cpu

    # Run more trials in another process and stop the device once one of them has finished.
    search = subprocess.Popen(
        [sys.executable, "-m", "canao.cli", "-q", "resume", "--study", "remote", "--storage", url,
         "--trials", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        study = optuna.load_study(study_name="remote", storage=url)
        while len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) < 2:
            assert search.poll() is None, search.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.5)
        _stop(rpc_device["server"])
        out, err = search.communicate(timeout=300)
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 0, err
    trials = optuna.load_study(study_name="remote", storage=url).trials
    assert len(trials) == 5
    states = [t.state for t in trials]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 2 and failed, states
    for t in failed:
        assert ("no device with key" in t.user_attrs["error"]
                or "device measurement failed" in t.user_attrs["error"]), t.user_attrs["error"]
