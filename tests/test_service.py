"""``canao serve`` on loopback: the guards (bind, token, names, sizes), errors as JSON, plot.

The server runs as a real ``canao serve`` subprocess on a free loopback port; requests go
through ``http.client`` so that a path such as ``/api/studies/../../etc`` reaches it as sent.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import FAST_TARGET, TINY_SPACE, db_fingerprint, run_cli

TOKEN = "t0ken-" + "x" * 26


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                     .encode())
    for k, (filename, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; '
                     f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


class Server:
    """A ``canao serve`` subprocess on a free loopback port."""

    def __init__(self, root: Path, storage: str, *, token: str | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.token = token
        self.data = root / "data"
        args = [sys.executable, "-m", "canao.cli", "serve", "--port", str(self.port),
                "--storage", storage, "--data-dir", str(self.data), *extra]
        if token:
            (root / "token").write_text(token + "\n")
            args += ["--token-file", str(root / "token")]
        self.log = root / "serve.log"
        self.proc = subprocess.Popen(args, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        end = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"canao serve exited: {self.log.read_text()}")
            try:
                if self.call("GET", "/api/health")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > end:
                self.stop()
                raise AssertionError(f"canao serve did not start: {self.log.read_text()}")
            time.sleep(0.3)

    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None, auth: str | None = "token",
             timeout: float = 300) -> tuple[int, dict[str, str], bytes]:
        headers = dict(headers or {})
        if auth == "token" and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif auth not in (None, "token"):
            headers["Authorization"] = auth
        con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            con.request(method, path, body=body, headers=headers)
            r = con.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            con.close()

    def json(self, method: str, path: str, data: Any = None, **kw: Any) -> tuple[int, Any]:
        body = None if data is None else json.dumps(data).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        status, h, raw = self.call(method, path, body, headers, **kw)
        assert h.get("content-type", "").startswith("application/json"), (status, raw[:300])
        return status, json.loads(raw)

    def start_search(self, fields: dict[str, str], files: dict[str, tuple[str, bytes]] | None = None,
                     **kw: Any) -> tuple[int, Any]:
        if files is None:
            files = {"space_file": (TINY_SPACE.name, TINY_SPACE.read_bytes()),
                     "target_file": (FAST_TARGET.name, FAST_TARGET.read_bytes())}
        body, ctype = multipart(fields, files)
        status, h, raw = self.call("POST", "/api/studies", body, {"Content-Type": ctype}, **kw)
        assert h.get("content-type", "").startswith("application/json"), (status, raw[:300])
        return status, json.loads(raw)

    def wait_done(self, study: str, timeout: float = 400) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            status, s = self.json("GET", f"/api/studies/{study}")
            assert status == 200, s
            if not s["progress"]["run"]["active"]:
                return s
            time.sleep(1)
        raise AssertionError(f"study {study} did not finish: {s}\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A service with a token over an empty SQLite study database."""
    root = tmp_path_factory.mktemp("guarded")
    server = Server(root, f"sqlite:///{root / 'canao.db'}", token=TOKEN)
    server.db = root / "canao.db"
    yield server
    server.stop()


def test_non_loopback_bind_without_a_token_is_refused(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "192.0.2.7", "::", "example.org"):
        code, text = run_cli("serve", "--host", host, "--port", str(free_port()),
                             "--storage", f"sqlite:///{tmp_path / 'c.db'}",
                             "--data-dir", str(tmp_path / "data"))
        assert code == 2, text
        errors = [ln for ln in text.splitlines() if ln.startswith("canao: error:")]
        assert len(errors) == 1 and "needs --token-file" in errors[0], text
    short = tmp_path / "short"
    short.write_text("abc")
    code, text = run_cli("serve", "--host", "0.0.0.0", "--token-file", str(short))
    assert code == 2 and "at least 16 characters" in text
    code, text = run_cli("serve", "--token-file", str(tmp_path / "absent"))
    assert code == 2 and "cannot be read" in text
    assert not (tmp_path / "c.db").exists() and not (tmp_path / "data").exists()


def test_loopback_detection() -> None:
    from canao.service import check_bind, is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "host.example"))
    check_bind("0.0.0.0", TOKEN)  # a token allows any address


def test_every_request_but_health_needs_the_token(guarded: Server) -> None:
    assert guarded.call("GET", "/api/health", auth=None)[0] == 200
    for path in ("/api/studies", "/openapi.json", "/", "/api/studies/x/front"):
        for auth in (None, "Bearer wrong-token-0123456789abcd", f"Bearer {TOKEN}x", TOKEN,
                     f"Basic {TOKEN}"):
            status, h, raw = guarded.call("GET", path, auth=auth)
            assert status == 401, (path, auth, status)
            assert json.loads(raw)["error"].startswith("missing or wrong token")
            assert h["www-authenticate"] == "Bearer"
    status, body = guarded.json("GET", "/api/studies")
    assert status == 200 and body == {"studies": []}
    status, api = guarded.json("GET", "/openapi.json")
    assert status == 200 and {"/api/studies", "/api/studies/{name}/front"} <= set(api["paths"])


@pytest.mark.parametrize("path", [
    "/api/studies/../../etc", "/api/studies/..%2F..%2Fetc", "/api/studies/../../etc/front",
    "/api/studies/..%2F..%2Fetc/trials", "/studies/..%2F..%2Fetc",
    "/api/studies/.hidden/exports/trial-0.tar.gz",
])
def test_a_path_like_study_name_is_400_and_touches_nothing(guarded: Server, path: str) -> None:
    before = (files_under(guarded.data), db_fingerprint(guarded.db))
    status, body = guarded.json("GET", path)
    assert status == 400 and "study name" in body["error"], body
    if path.startswith("/api/"):
        status, body = guarded.json("POST", path.replace("/front", "").replace("/trials", "")
                                    + "/exports", {"trial": 0})
        assert status == 400, body
    status, body = guarded.start_search({"name": "../../etc", "trials": "1"})
    assert status == 400 and "study name '../../etc'" in body["error"]
    assert (files_under(guarded.data), db_fingerprint(guarded.db)) == before


def test_export_names_are_validated(guarded: Server) -> None:
    for name in ("..%2F..%2Fcanao.db", "trial-1.tar", "trial-x.tar.gz", "..%2Ftrial-1.tar.gz"):
        status, body = guarded.json("GET", f"/api/studies/s/exports/{name}")
        assert status == 400, (name, body)  # a slash makes it a (refused) study name
        assert ("not an export name" if "%2F" not in name else "study name") in body["error"]
    status, body = guarded.json("GET", "/api/studies/s/exports/trial-1.tar.gz")
    assert status == 404


def test_oversized_uploads_are_413(guarded: Server) -> None:
    before = (files_under(guarded.data), db_fingerprint(guarded.db))
    big = b"# padding\n" * 200_000  # 2 MB: over the service's body limit
    status, body = guarded.start_search(
        {"name": "big", "trials": "1"},
        {"space_file": ("big.yaml", big), "target_file": ("t.json", FAST_TARGET.read_bytes())})
    assert status == 413 and "over the service's limit" in body["error"], body
    # Under the body limit but over what a space file may be (the library's own limit).
    large = TINY_SPACE.read_bytes() + b"# padding\n" * 30_000
    status, body = guarded.start_search(
        {"name": "large", "trials": "1"},
        {"space_file": ("large.yaml", large), "target_file": ("t.json", FAST_TARGET.read_bytes())})
    assert status == 413 and "space file 'large.yaml' is larger than" in body["error"], body
    assert (files_under(guarded.data), db_fingerprint(guarded.db)) == before


@pytest.mark.parametrize(("fields", "files", "status", "needle"), [
    ({"space": "nosuch", "target": "fast-cpu"}, {}, 400, "no shipped space file of that name"),
    ({"space": "/etc/passwd", "target": "host-cpu"}, {}, 400, "no shipped space file"),
    ({"target": "host-cpu"}, {"space_file": ("s.yaml", b"version: 1\nsearch: [1, 2\n")}, 400,
     "uploaded space file 's.yaml': not valid YAML at line"),
    ({"target": "host-cpu"}, {"space_file": ("s.yaml", b"!!python/object/apply:os.system ['id']")},
     400, "not valid YAML"),
    ({"target": "host-cpu"}, {"space_file": ("s.yaml", TINY_SPACE.read_bytes().replace(
        b"hidden: [16, 32]", b"hidden: [16, 32]\n  depth: [1]"))}, 400, "unknown key 'search.depth'"),
    ({"target": "host-cpu"}, {"space_file": ("s.yaml", TINY_SPACE.read_bytes().replace(
        b"task: digits", b"task: csv:/etc/passwd"))}, 400, "reads a file on the server"),
    ({"space": "vit_digits"}, {"target_file": ("t.json", b'{"version": 1, "target": {"kind": "llvm", '
                                               b'"cpu": 3}}')}, 400, "TVM refuses target"),
    ({"space": "vit_digits", "target": "host-cpu", "space_file": "x"}, {}, 400, "give either"),
    ({"space": "vit_digits", "target": "host-cpu", "trials": "0"}, {}, 422, "trials:"),
    ({"space": "vit_digits", "target": "host-cpu", "workers": "2"}, {}, 400, "SQLite file"),
])
def test_bad_search_requests_are_json_errors_and_change_nothing(
        guarded: Server, fields: dict, files: dict, status: int, needle: str) -> None:
    before = (files_under(guarded.data), db_fingerprint(guarded.db))
    if "space_file" in fields:  # both a shipped name and an upload
        files = {"space_file": ("s.yaml", TINY_SPACE.read_bytes())}
        fields = {k: v for k, v in fields.items() if k != "space_file"}
    got, body = guarded.start_search({"name": "fresh", **fields}, files)
    assert got == status and needle in body["error"], body
    assert "Traceback" not in body["error"]
    assert (files_under(guarded.data), db_fingerprint(guarded.db)) == before


def test_unknown_study_and_route_are_json_404(guarded: Server) -> None:
    for method, path in (("GET", "/api/studies/nosuch"), ("GET", "/api/studies/nosuch/front"),
                         ("POST", "/api/studies/nosuch/stop"), ("GET", "/api/nothing-here")):
        status, body = guarded.json(method, path)
        assert status == 404 and body["status"] == 404, body
    status, body = guarded.json("POST", "/api/studies/nosuch/resume", {"trials": 1, "bogus": 1})
    assert status == 422 and "bogus" in body["error"]


def test_plot_writes_png_and_html(finished_study: dict, tmp_path: Path) -> None:
    png, html = tmp_path / "front.png", tmp_path / "front.html"
    for out in (png, html):
        code, text = run_cli("plot", "--study", "tiny", "--storage", finished_study["url"],
                             "--out", str(out))
        assert code == 0 and "3 finished trial(s)" in text, text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 800 and len(im.convert("RGB").getcolors(1 << 20)) > 50  # a drawing
    page = html.read_text()
    data = json.loads(page.split("const EMBEDDED = ", 1)[1].split(";   //", 1)[0])
    assert data["study"] == "tiny" and len(data["points"]) == 3
    assert {p["trial"] for p in data["points"] if p["pareto"]} == set(data["front"])
    code, text = run_cli("plot", "--study", "tiny", "--storage", finished_study["url"],
                         "--out", str(tmp_path / "front.txt"))
    assert code == 2 and "canao: error: --out" in text and "write .png or .html" in text
    code, text = run_cli("plot", "--study", "nosuch", "--storage", finished_study["url"],
                         "--out", str(png))
    assert code == 2 and "no study 'nosuch'" in text


def test_service_import_is_light() -> None:
    code = ("import sys, canao.service, canao.cli; "
            "print(','.join(m for m in ('fastapi', 'uvicorn', 'torch', 'tvm', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ})
    assert out.stdout.strip() == ""


def test_serve_refuses_an_unreachable_database_at_start(tmp_path: Path) -> None:
    code, text = run_cli("serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"),
                         "--storage", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    errors = [ln for ln in text.splitlines() if ln.startswith("canao: error:")]
    assert code == 2 and len(errors) == 1 and "cannot open study database" in errors[0], text
    code, text = run_cli("serve", "--heartbeat-s", "10", "--grace-s", "5")
    assert code == 2 and "--grace-s (5) must be longer" in text


def test_trials_are_shared_out_over_workers() -> None:
    from canao.service._workers import split

    assert split(2, 2) == [1, 1] and split(3, 2) == [2, 1] and split(1, 4) == [1]
    assert split(10, 3) == [4, 3, 3] and sum(split(17, 5)) == 17
