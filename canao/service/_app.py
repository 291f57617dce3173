"""The HTTP API and the Pareto page: a thin layer over :mod:`canao.study` and :mod:`canao.export`.

Nothing is kept here that the study database does not hold, except the worker processes
this service started (see :mod:`canao.service._workers`) and the export archives it wrote.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from canao import __version__, db
from canao import study as st
from canao.compile import resolve_device
from canao.errors import CanaoError
from canao.export import export_bundle, select_trial
from canao.runtime import METRICS_FILE, SUMS_FILE, read_checksums, sha256_file
from canao.service._config import ServiceConfig
from canao.service._gate import ARCHIVE, Gate
from canao.service._inputs import ExportRequest, ResumeRequest, _input, _refuse_local_paths
from canao.service._plots import page_html, plot_points
from canao.service._state import Service, _archive
from canao.space import MAX_SPACE_BYTES, parse_space, shipped_dir
from canao.targets import MAX_PROFILE_BYTES, parse_profile

log = logging.getLogger(__name__)
READERS = 2  # read routes served at once (see create_app)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def create_app(config: ServiceConfig) -> FastAPI:
    """The FastAPI application of ``canao serve`` (OpenAPI description at ``/openapi.json``)."""
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        service.pool.start_watching()
        yield
        service.pool.shutdown()

    # The read routes (listing, a study's status, front and trials) are short; they run in
    # threads of their own, READERS at a time, in arrival order. In the shared thread pool 16
    # concurrent readers contend for the GIL and the slowest waits many switch intervals
    # (p99 350 ms against 70 ms for the median, benchmarks/service.py); on the event loop
    # itself a stalled database would stall every route, /api/health included. Long routes
    # (export, create) stay in the shared pool.
    limiter: list[anyio.CapacityLimiter] = []

    async def read(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if not limiter:  # made on the running loop
            limiter.append(anyio.CapacityLimiter(READERS))
        return await anyio.to_thread.run_sync(work, limiter=limiter[0])

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
        return {"spaces": sorted(p.stem for p in shipped_dir("search_spaces").glob("*.yaml")),
                "targets": sorted(p.stem for p in shipped_dir("tvm_targets").glob("*.json"))}

    @app.get("/api/studies", tags=["studies"])
    async def list_studies() -> dict[str, Any]:
        """Every study: trial counts by state, best values, and the run this service started."""
        def work() -> dict[str, Any]:
            rows = db.summaries(config.storage)
            return {"studies": [{**r, "run": service.pool.describe(r["study"])} for r in rows]}

        return await read(work)

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
        def work() -> dict[str, Any]:
            cs = service.study(name)
            budgets = st.with_overrides(cs.budgets, max_latency_ms=max_latency_ms,
                                        max_memory_mb=max_memory_mb,
                                        max_accuracy_drop=max_accuracy_drop)
            return {"study": name, **st.front(cs, budgets)}

        return await read(work)

    @app.get("/api/studies/{name:path}/trials", tags=["front"])
    async def trials(name: str) -> dict[str, Any]:
        """Every finished trial with its feasibility and front membership (the page's data)."""
        def work() -> dict[str, Any]:
            return {**plot_points(service.study(name)), "run": service.pool.describe(name),
                    "refresh_s": config.refresh_s}

        return await read(work)

    @app.post("/api/studies/{name:path}/exports", status_code=201, tags=["exports"])
    def export(name: str, req: ExportRequest) -> dict[str, Any]:
        """Export a trial (by number or by budgets) as a compiled bundle in one .tar.gz."""
        service.study(name)
        # Fresh from the database (a worker may have recorded the study's device since the
        # service cached it): the final build is timed here, so here must be its device.
        cs = st.load(name, config.storage)
        device = resolve_device(cs.profile)
        st.check_device(cs, device, record=False)
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
                    export_bundle(cs, chosen, bundle, device)
                _archive(bundle, archive, f"{name}-{eid}")
        sums = read_checksums(bundle)
        return {"study": name, "trial": chosen.number, "export": eid,
                "download": f"/api/studies/{name}/exports/{archive.name}",
                "sha256": sha256_file(archive), "bytes": archive.stat().st_size,
                "files": sums, "metrics": json.loads((bundle / METRICS_FILE).read_text())}

    @app.get("/api/studies/{name:path}/exports/{archive_name}", tags=["exports"],
             response_class=FileResponse)
    def download(name: str, archive_name: str) -> FileResponse:
        """An export's archive (its bundle, with ``SHA256SUMS`` inside; the archive's own
        digest in the ``X-Canao-SHA256`` header)."""
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
        def work() -> dict[str, Any]:
            service.study(name)
            summary = db.summaries(config.storage, name)[0]
            return {**summary,
                    "progress": service.progress(name, summary["states"].get("COMPLETE", 0))}

        return await read(work)

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
