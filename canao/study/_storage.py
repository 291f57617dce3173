"""Opening the study database, with errors a user can act on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from canao.errors import StorageError

DEFAULT_STORAGE = "sqlite:///canao.db"


def storage_url(url: str | None) -> str:
    """``url``, else ``$CANAO_STORAGE``, else ``sqlite:///canao.db``."""
    return url or os.environ.get("CANAO_STORAGE") or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL (None for other databases or in-memory)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?")[0]
    return Path(path) if path and path != ":memory:" else None


def open_storage(url: str, *, must_exist: bool) -> Any:
    """Optuna's RDB storage for ``url``.

    Args:
        url: A SQLAlchemy URL.
        must_exist: For commands that only read or continue a study: a SQLite file that
            does not exist is an error rather than silently created empty.

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
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        # Several processes may touch one SQLite file (a search and a `status`): wait for
        # a lock rather than failing at once with "database is locked".
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                          heartbeat_interval=None)
    except (sqlalchemy.exc.SQLAlchemyError, ModuleNotFoundError, ImportError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(f"cannot open study database {shown}: {reason}") from e
