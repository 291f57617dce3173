"""The HTTP API and the Pareto page: a thin layer over :mod:`canao.study` and :mod:`canao.export`.

Nothing is kept here that the study database does not hold, except the worker processes
this service started (see :mod:`canao.service._workers`) and the export archives it wrote.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from canao import __version__
from canao import study as st
from canao.errors import CanaoError
from canao.service._config import EXPORT_ID, ServiceConfig
from canao.service._plots import page_html, plot_points
from canao.service._workers import WorkerPool

log = logging.getLogger(__name__)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGI = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                Awaitable[None]]
PUBLIC = ("/api/health",)  # the only path a token does not guard
ARCHIVE = re.compile(EXPORT_ID.pattern + r"\.tar\.gz")


class Gate:
    """ASGI middleware in front of every route: the bearer token, then the body size.

    The body is read here (up to ``max_body`` bytes) so an oversized upload is refused
    with 413 before any handler or multipart parser sees it.
    """

    def __init__(self, app: ASGI, token: str | None, max_body: int) -> None:
        self.app, self.token, self.max_body = app, token, max_body
        self.expected = f"Bearer {token}".encode() if token else b""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.token and scope["path"] not in PUBLIC:
            given = headers.get(b"authorization", b"")
            # compare_digest's time does not depend on where the bytes first differ
            if not hmac.compare_digest(given, self.expected):
                await _reply(send, 401, "missing or wrong token: send 'Authorization: Bearer TOKEN'",
                             [(b"www-authenticate", b"Bearer")])
                return
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            await _reply(send, 413, f"request body of {int(length)} bytes is over the "
                         f"service's limit of {self.max_body} bytes")
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await _reply(send, 413, f"request body is over the service's limit of "
                             f"{self.max_body} bytes")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send: Any, status: int, message: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trials: int = Field(10, ge=1, le=100_000, description="COMPLETE trials to add")
    workers: int = Field(1, ge=1, description="canao worker processes to share them")


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trial: int | None = Field(None, ge=0, description="export this trial ...")
    max_latency_ms: float | None = Field(None, ge=0, description="... or the most accurate "
                                         "Pareto trial within this latency")
    max_memory_mb: float | None = Field(None, ge=0, description="... and this memory")


class Service:
    """What the routes share: the configuration, the study database and the worker pool."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        for folder in (config.artifacts, config.exports, config.logs):
            folder.mkdir(parents=True, exist_ok=True)
        self.storage = st.open_storage(config.storage, must_exist=False)
        self.pool = WorkerPool(config, self.complete)
        self._studies: dict[str, st.CanaoStudy] = {}
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()
        self._export_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def names(self) -> list[str]:
        return sorted(s.study_name for s in self.storage.get_all_studies())

    def study(self, name: str) -> st.CanaoStudy:
        """The named study; 400 for a name the CLI would refuse, 404 for an unknown one."""
        st.check_study_name(name)
        with self._lock:
            cs = self._studies.get(name)
            if cs is None:
                if name not in self.names():
                    raise HTTPException(404, f"no study '{name}' in "
                                        f"{st.redact(self.config.storage)}")
                cs = self._studies[name] = st.load(name, self.config.storage)
            return cs

    def check_workers(self, workers: int) -> None:
        if workers > self.config.max_workers:
            raise HTTPException(400, f"workers: at most {self.config.max_workers} per request")
        if workers > 1 and st._storage.sqlite_path(self.config.storage) is not None:
            raise HTTPException(400, f"workers: {workers} asked, but the study database is a "
                                "SQLite file, which takes one worker; start the service with "
                                "--storage postgresql+psycopg://user@host/db for several")

    def complete(self, name: str) -> int:
        """Finished trials of a study (one grouped count, not every trial)."""
        return int(st.summaries(self.config.storage, name)[0]["states"].get("COMPLETE", 0))

    def progress(self, name: str, complete: int) -> dict[str, Any]:
        run = self.pool.describe(name)
        out: dict[str, Any] = {"complete": complete, "run": run}
        if run is not None:
            out["goal"] = run["goal"]
        return out


def _read_upload(upload: UploadFile, limit: int, what: str) -> str:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"{what} '{upload.filename}' is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HTTPException(400, f"{what} '{upload.filename}' is not UTF-8 text") from e


def _stem(filename: str | None) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(filename or "").stem).strip("._-")[:64]
    return stem or "uploaded"


def _input(shipped: str | None, upload: UploadFile | None, folder: str, suffix: str,
           what: str, field: str, limit: int) -> tuple[str, str, str]:
    """(text, name, where) of a shipped file named by ``shipped`` or of an uploaded one."""
    from canao.space import shipped_dir

    if (shipped is None) == (upload is None):
        raise HTTPException(400, f"give either '{field}' (a shipped {what}) or "
                            f"'{field}_file' (an upload)")
    if upload is not None:
        return _read_upload(upload, limit, what), _stem(upload.filename), \
            f"uploaded {what} '{upload.filename}'"
    shipped = shipped or ""
    known = sorted(p.stem for p in shipped_dir(folder).glob(f"*{suffix}"))
    stem = shipped[:-len(suffix)] if shipped.endswith(suffix) else shipped
    if stem not in known:  # only names: a path here could read any file on the server
        raise HTTPException(400, f"{field} {shipped!r}: no shipped {what} of that name "
                            f"(shipped: {', '.join(known) or 'none'}); upload a file instead")
    return (shipped_dir(folder) / f"{stem}{suffix}").read_text(), stem, f"shipped {what} '{stem}'"


def _refuse_local_paths(space: Any, where: str) -> None:
    """A space sent to the service may not name files on the server (data or checkpoint)."""
    if ":" in space.task:
        raise HTTPException(400, f"{where}: task '{space.task}' reads a file on the server; "
                            "the service runs built-in tasks only (use the CLI for file tasks)")
    ckpt = space.base.model.checkpoint
    if ckpt and (os.sep in ckpt or "/" in ckpt or ckpt.startswith((".", "~"))):
        raise HTTPException(400, f"{where}: base.model.checkpoint '{ckpt}' is a path on the "
                            "server; the service takes shipped checkpoint names only")


def _archive(bundle: Path, archive: Path, root: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=archive.parent, prefix=f".{archive.name}.partial-")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for p in sorted(bundle.iterdir()):
                tar.add(p, arcname=f"{root}/{p.name}", recursive=False)
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_app(config: ServiceConfig) -> FastAPI:
    """The FastAPI application of ``canao serve`` (OpenAPI description at ``/openapi.json``)."""
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        service.pool.start_watching()
        yield
        service.pool.shutdown()

    # The read routes (listing, a study's status, front and trials) are short and run on the
    # event loop, one at a time in arrival order: in the thread pool, 16 concurrent readers
    # contend for the GIL and the slowest waits many switch intervals (p99 of 350 ms against
    # 70 ms for the median, measured by benchmarks/service.py). Long routes (export, create)
    # stay in the pool, off the loop.

    # No /docs or /redoc: their pages load scripts from a CDN, and canao runs offline;
    # /openapi.json is the description.
    app = FastAPI(title="canao", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None,
                  description="Compiler-aware architecture search as a service: studies, "
                              "workers, the Pareto front and compiled exports over one study "
                              "database.")
    app.state.service = service
    app.add_middleware(Gate, token=config.token, max_body=config.max_body_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                 for e in exc.errors()]
        return _error(422, "; ".join(parts))

    @app.exception_handler(CanaoError)
    async def canao_error(request: Request, exc: CanaoError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the service log")

    # -- API --------------------------------------------------------------------------
    @app.get("/api/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness (needs no token)."""
        return {"status": "ok", "version": __version__}

    @app.get("/api/spaces", tags=["service"])
    def spaces() -> dict[str, list[str]]:
        """Shipped search spaces and target profiles, by name."""
        from canao.space import shipped_dir

        return {"spaces": sorted(p.stem for p in shipped_dir("search_spaces").glob("*.yaml")),
                "targets": sorted(p.stem for p in shipped_dir("tvm_targets").glob("*.json"))}

    @app.get("/api/studies", tags=["studies"])
    async def list_studies() -> dict[str, Any]:
        """Every study: trial counts by state, best values, and the run this service started."""
        rows = st.summaries(config.storage)
        return {"studies": [{**r, "run": service.pool.describe(r["study"])} for r in rows]}

    @app.post("/api/studies", status_code=201, tags=["studies"])
    def create_study(
        name: Annotated[str | None, Form(description="study name [default: SPACE-TARGET-TIME]")] = None,
        space: Annotated[str | None, Form(description="a shipped space's name")] = None,
        space_file: Annotated[UploadFile | None, File(description="a space YAML file")] = None,
        target: Annotated[str | None, Form(description="a shipped target profile's name")] = None,
        target_file: Annotated[UploadFile | None, File(description="a target profile JSON")] = None,
        trials: Annotated[int, Form(ge=1, le=100_000)] = 10,
        workers: Annotated[int, Form(ge=1)] = 1,
        seed: Annotated[int, Form()] = 0,
        max_latency_ms: Annotated[float | None, Form(ge=0)] = None,
        max_memory_mb: Annotated[float | None, Form(ge=0)] = None,
        max_accuracy_drop: Annotated[float | None, Form(ge=0)] = None,
    ) -> dict[str, Any]:
        """Start a search: validate as ``canao search`` does, create the study, start workers."""
        from canao.space import MAX_SPACE_BYTES, parse_space
        from canao.targets import MAX_PROFILE_BYTES, parse_profile

        if name is not None:
            st.check_study_name(name)
        service.check_workers(workers)
        space_text, space_name, where = _input(space, space_file, "search_spaces", ".yaml",
                                               "space file", "space", MAX_SPACE_BYTES)
        parsed = parse_space(space_text, where=where, name=space_name)
        _refuse_local_paths(parsed, where)
        profile_text, profile_name, twhere = _input(target, target_file, "tvm_targets", ".json",
                                                    "target profile", "target", MAX_PROFILE_BYTES)
        profile = parse_profile(profile_text, where=twhere, name=profile_name)
        # The device is this machine's (or the profile's RPC device): its workers measure there.
        plan = st.plan_search(parsed, space_text, profile, name=name,
                              max_latency_ms=max_latency_ms, max_memory_mb=max_memory_mb,
                              max_accuracy_drop=max_accuracy_drop)
        with service._create_lock:
            if plan.name in service.names():
                raise HTTPException(409, f"study '{plan.name}' already exists; resume it with "
                                    f"POST /api/studies/{plan.name}/resume")
            plan.create(config.storage, artifacts=config.artifacts, seed=seed)
            run = service.pool.start(plan.name, trials, workers)
        return {"study": plan.name, "run": run.describe()}

    @app.post("/api/studies/{name:path}/resume", status_code=202, tags=["studies"])
    def resume(name: str, req: ResumeRequest) -> dict[str, Any]:
        """Run more trials of a study with new workers (its space and target are stored)."""
        service.study(name)
        service.check_workers(req.workers)
        if service.pool.active(name):
            raise HTTPException(409, f"study '{name}' already has workers running; stop them "
                                "first or wait")
        return {"study": name, "run": service.pool.start(name, req.trials, req.workers).describe()}

    @app.post("/api/studies/{name:path}/stop", tags=["studies"])
    def stop(name: str) -> dict[str, Any]:
        """Interrupt the workers this service started on the study (their trials fail)."""
        service.study(name)
        run = service.pool.stop(name)
        if run is None:
            raise HTTPException(404, f"this service started no workers on study '{name}'")
        return {"study": name, "run": run.describe()}

    @app.get("/api/studies/{name:path}/front", tags=["front"])
    async def front(name: str, max_latency_ms: float | None = None, max_memory_mb: float | None = None,
              max_accuracy_drop: float | None = None) -> dict[str, Any]:
        """The feasible Pareto front (optionally read under other budgets), as ``canao pareto``."""
        cs = service.study(name)
        budgets = st.with_overrides(cs.budgets, max_latency_ms=max_latency_ms,
                                    max_memory_mb=max_memory_mb, max_accuracy_drop=max_accuracy_drop)
        return {"study": name, **st.front(cs, budgets)}

    @app.get("/api/studies/{name:path}/trials", tags=["front"])
    async def trials(name: str) -> dict[str, Any]:
        """Every finished trial with its feasibility and front membership (the page's data)."""
        cs = service.study(name)
        return {**plot_points(cs), "run": service.pool.describe(name),
                "refresh_s": config.refresh_s}

    @app.post("/api/studies/{name:path}/exports", status_code=201, tags=["exports"])
    def export(name: str, req: ExportRequest) -> dict[str, Any]:
        """Export a trial (by number or by budgets) as a compiled bundle in one .tar.gz."""
        from canao.export import export_bundle, select_trial
        from canao.runtime import METRICS_FILE, SUMS_FILE, sha256_file

        cs = service.study(name)
        if (req.trial is None) == (req.max_latency_ms is None and req.max_memory_mb is None):
            raise HTTPException(400, "give either 'trial' or a budget ('max_latency_ms' and/or "
                                "'max_memory_mb')")
        chosen = select_trial(cs, trial=req.trial, max_latency_ms=req.max_latency_ms,
                              max_memory_mb=req.max_memory_mb)
        eid = f"trial-{chosen.number}"
        folder = config.exports / name
        bundle, archive = folder / eid, folder / f"{eid}.tar.gz"
        with service._export_locks[f"{name}/{eid}"]:
            if not archive.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                if bundle.exists() and not (bundle / SUMS_FILE).is_file():
                    shutil.rmtree(bundle)  # not a finished bundle: export_bundle is atomic
                if not bundle.exists():
                    export_bundle(cs, chosen, bundle)
                _archive(bundle, archive, f"{name}-{eid}")
        sums = {file: digest for digest, file in
                (line.split("  ", 1) for line in (bundle / SUMS_FILE).read_text().splitlines())}
        return {"study": name, "trial": chosen.number, "export": eid,
                "download": f"/api/studies/{name}/exports/{archive.name}",
                "sha256": sha256_file(archive), "bytes": archive.stat().st_size,
                "files": sums, "metrics": json.loads((bundle / METRICS_FILE).read_text())}

    @app.get("/api/studies/{name:path}/exports/{archive_name}", tags=["exports"],
             response_class=FileResponse)
    def download(name: str, archive_name: str) -> FileResponse:
        """An export's archive (its bundle, with ``SHA256SUMS`` inside; the archive's own
        digest in the ``X-Canao-SHA256`` header)."""
        from canao.runtime import sha256_file

        st.check_study_name(name)
        if not ARCHIVE.fullmatch(archive_name):
            raise HTTPException(400, f"export {archive_name!r}: not an export name "
                                "(trial-N.tar.gz)")
        path = config.exports / name / archive_name
        if not path.is_file():
            raise HTTPException(404, f"study '{name}' has no export {archive_name}; "
                                f"POST /api/studies/{name}/exports first")
        return FileResponse(path, media_type="application/gzip", filename=archive_name,
                            headers={"X-Canao-SHA256": sha256_file(path)})

    @app.get("/api/studies/{name:path}", tags=["studies"])
    async def study_status(name: str) -> dict[str, Any]:
        """One study: trial counts by state, best values and the progress of its run."""
        service.study(name)
        summary = st.summaries(config.storage, name)[0]
        return {**summary,
                "progress": service.progress(name, summary["states"].get("COMPLETE", 0))}

    # -- pages ------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        from importlib import resources

        return HTMLResponse(resources.files("canao.service").joinpath("static", "index.html")
                            .read_text())

    @app.get("/studies/{name:path}", response_class=HTMLResponse, include_in_schema=False)
    def page(name: str) -> HTMLResponse:
        service.study(name)
        return HTMLResponse(page_html())

    return app
