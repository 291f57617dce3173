"""docker/: the compose file's shape, its validation by the Compose client where one is
installed, and its topology (PostgreSQL, API, RPC tracker, dashboard) run as plain
processes on loopback with the very commands the compose file gives each service."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from .test_service import TOKEN, free_port

DOCKER = Path(__file__).resolve().parents[1] / "docker"
SERVICES = {"postgres", "api", "worker", "tracker", "dashboard"}


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_file_shape() -> None:
    c = _compose()
    assert set(c["services"]) == SERVICES
    s = c["services"]
    assert "pgdata:/var/lib/postgresql/data" in s["postgres"]["volumes"] and "pgdata" in c["volumes"]
    assert "container_name" not in s["worker"]  # scalable: --scale worker=N
    assert s["worker"]["command"][:3] == ["canao", "-q", "worker"]
    for name in ("api", "tracker", "dashboard"):  # published on loopback only
        assert all(p.startswith("127.0.0.1:") for p in s[name]["ports"]), name
    assert "--token-file" in s["api"]["command"] and s["api"]["secrets"] == ["canao_token"]
    for name in ("api", "worker", "dashboard"):
        assert "postgresql+psycopg://" in s[name]["environment"]["CANAO_STORAGE"]
        assert s[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and ".[service,dashboard]" in dockerfile
    assert "USER canao" in dockerfile


def test_compose_config_validates(tmp_path: Path) -> None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        cmd = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        cmd = ["docker-compose"]
    else:
        reason = "no Compose client (neither `docker compose` nor `docker-compose`; make compose-tools)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI requires a Compose client: {reason}")
        pytest.skip(reason)
    env = {**os.environ, "POSTGRES_PASSWORD": "x", "CANAO_STUDY": "s1"}
    token = DOCKER / "canao_token"
    made = not token.exists()
    if made:
        token.write_text(TOKEN)  # the secret's file must exist; it is git-ignored
    try:
        out = subprocess.run([*cmd, "-f", str(DOCKER / "compose.yaml"), "--profile", "workers",
                              "config"], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        assert set(yaml.safe_load(out.stdout)["services"]) == SERVICES
        missing = subprocess.run([*cmd, "-f", str(DOCKER / "compose.yaml"), "config"],
                                 capture_output=True, text=True,
                                 env={k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"})
        assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr
    finally:
        if made:
            token.unlink()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _wait(what: str, check, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"{what} exited: {log.read_text()[-2000:]}"
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{what} did not come up: {log.read_text()[-2000:]}")


def test_compose_topology_as_loopback_processes(postgres_url: str, tmp_path: Path) -> None:
    services = _compose()["services"]
    (tmp_path / "token").write_text(TOKEN)
    ports = {name: free_port() for name in ("api", "tracker", "dashboard")}
    swap = {"0.0.0.0": "127.0.0.1", "8787": str(ports["api"]), "9190": str(ports["tracker"]),
            "9191": str(ports["tracker"] + 1),
            "8080": str(ports["dashboard"]), "/run/secrets/canao_token": str(tmp_path / "token"),
            "/data/service": str(tmp_path / "service")}
    env = {**os.environ, "CANAO_STORAGE": postgres_url}
    bin_dir = Path(sys.executable).parent
    procs: list[subprocess.Popen] = []
    logs = {}
    try:
        for name in ("api", "tracker", "dashboard"):
            cmd = [swap.get(a, a) for a in services[name]["command"]]
            if cmd[0] == "sh":  # the dashboard's shell line
                for old, new in swap.items():
                    cmd[2] = cmd[2].replace(old, new)
                cmd[2] = cmd[2].replace("$$", "$")
            elif cmd[0] in ("canao", "python"):
                cmd[0] = str(bin_dir / ("canao" if cmd[0] == "canao" else "python"))
            env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
            logs[name] = tmp_path / f"{name}.log"
            # a session of its own: the tracker's helper process is stopped with it
            procs.append(subprocess.Popen(cmd, env=env, stdout=logs[name].open("w"),
                                          stderr=subprocess.STDOUT, start_new_session=True))
        api, tracker, dashboard = procs
        base = f"http://127.0.0.1:{ports['api']}"
        _wait("api", lambda: _get(f"{base}/api/health")[0] == 200, api, logs["api"])
        assert _get(f"{base}/api/studies")[0] == 401
        status, body = _get(f"{base}/api/studies", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and "studies" in json.loads(body)
        _wait("dashboard", lambda: _get(f"http://127.0.0.1:{ports['dashboard']}/api/studies")[0]
              == 200, dashboard, logs["dashboard"])
        from tvm import rpc

        _wait("tracker", lambda: "Queue Status" in rpc.connect_tracker(
            "127.0.0.1", ports["tracker"]).text_summary(), tracker, logs["tracker"])
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
