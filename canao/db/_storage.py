"""Opening the study database, with errors a user can act on."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canao._locks import file_lock
from canao.errors import StorageError

DEFAULT_STORAGE = "sqlite:///canao.db"


def storage_url(url: str | None) -> str:
    """``url``, else ``$CANAO_STORAGE``, else ``sqlite:///canao.db``."""
    return url or os.environ.get("CANAO_STORAGE") or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL without its password, for messages and logs (``user:***@host``)."""
    scheme, sep, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = auth.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL (None for other databases or in-memory)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?")[0]
    return Path(path) if path and path != ":memory:" else None


@dataclass(frozen=True)
class Heartbeat:
    """Liveness of running trials (Optuna's heartbeats).

    A worker beats every ``interval_s`` from a thread, so a long compile does not stop
    it; a RUNNING trial whose last beat is older than ``grace_s`` belongs to a dead
    worker: any worker, before starting its next trial, marks it failed and re-enqueues its
    parameters once.
    """

    interval_s: int = 30
    grace_s: int = 300


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for a study database (Optuna's engine and canao's own)."""
    if url.startswith("sqlite"):
        # Several processes may touch one SQLite file (a search and a `status`): wait for
        # a lock rather than failing at once with "database is locked".
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}  # survive connections the server dropped between trials


def open_storage(url: str, *, must_exist: bool, heartbeat: Heartbeat | None = None) -> Any:
    """Optuna's RDB storage for ``url``.

    Args:
        url: A SQLAlchemy URL.
        must_exist: For commands that only read or continue a study: a SQLite file that
            does not exist is an error rather than silently created empty.
        heartbeat: For processes that run trials: heartbeats, and a failed stale trial
            retried once with the same parameters.

    Raises:
        StorageError: naming the (redacted) URL and the reason.
    """
    import optuna
    import sqlalchemy.exc

    shown = redact(url)
    path = sqlite_path(url)
    if path is not None:
        if must_exist and not path.is_file():
            raise StorageError(f"study database {shown}: file {path} does not exist")
        if not path.parent.is_dir():
            raise StorageError(f"study database {shown}: folder {path.parent} does not exist")
    beat: dict[str, Any] = {"heartbeat_interval": None}
    try:
        with warnings.catch_warnings():
            # Optuna calls its heartbeat retry experimental; nothing a user can act on.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat is not None:
                beat = {"heartbeat_interval": heartbeat.interval_s,
                        "grace_period": heartbeat.grace_s,
                        "heartbeat_stale_trial_callback":
                            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **beat)
    except (sqlalchemy.exc.SQLAlchemyError, ModuleNotFoundError, ImportError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(f"cannot open study database {shown}: {reason}") from e


@contextlib.contextmanager
def sole_sqlite_worker(url: str) -> Iterator[bool]:
    """For the block, be the only process running trials on a SQLite study file.

    SQLite serialises writers on one file; several trial-running processes would end in
    "database is locked" under load. A second one is refused at start instead (reading
    commands such as ``status`` are not affected). Other databases need no guard.

    Yields:
        True when the lock is held: then no other process is running trials on the file,
        so a RUNNING trial found there belongs to a process that died.
    """
    path = sqlite_path(url)
    if path is None:
        yield False
        return
    lock = path.with_name(path.name + ".canao-worker.lock")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(lock, wait=False))
        except BlockingIOError:
            raise StorageError(
                f"study database {redact(url)} is a SQLite file and another canao process is "
                "already running trials on it; SQLite is for one worker: run several workers "
                "against PostgreSQL (--storage postgresql+psycopg://user@host/db)") from None
        yield True
