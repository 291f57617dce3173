"""What the routes share: the configuration, the study database, workers and exports."""

from __future__ import annotations

import logging
import os
import tarfile
import tempfile
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from canao import db
from canao import study as st
from canao.service._config import ServiceConfig
from canao.service._workers import WorkerPool

log = logging.getLogger(__name__)


class Service:
    """What the routes share: the configuration, the study database and the worker pool."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        for folder in (config.artifacts, config.exports, config.logs):
            folder.mkdir(parents=True, exist_ok=True)
        self.storage = db.open_storage(config.storage, must_exist=False)
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
                                        f"{db.redact(self.config.storage)}")
                cs = self._studies[name] = st.load(name, self.config.storage)
            return cs

    def check_workers(self, workers: int) -> None:
        if workers > self.config.max_workers:
            raise HTTPException(400, f"workers: at most {self.config.max_workers} per request")
        if workers > 1 and db.sqlite_path(self.config.storage) is not None:
            raise HTTPException(400, f"workers: {workers} asked, but the study database is a "
                                "SQLite file, which takes one worker; start the service with "
                                "--storage postgresql+psycopg://user@host/db for several")

    def complete(self, name: str) -> int:
        """Finished trials of a study (one grouped count, not every trial)."""
        return int(db.summaries(self.config.storage, name)[0]["states"].get("COMPLETE", 0))

    def progress(self, name: str, complete: int) -> dict[str, Any]:
        run = self.pool.describe(name)
        out: dict[str, Any] = {"complete": complete, "run": run}
        if run is not None:
            out["goal"] = run["goal"]
        return out


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
