"""The study database: its URL, how it is opened, and the study listing read with plain SQL.

Light by design: listing studies (``canao status``, the service's ``/api/studies``) needs
SQLAlchemy and the database driver, not Optuna; :func:`open_storage` imports Optuna when a
command opens a study through it.
"""

from canao.db._listing import OBJECTIVES, summaries
from canao.db._storage import (
    DEFAULT_STORAGE,
    Heartbeat,
    engine_kwargs,
    open_storage,
    redact,
    sole_sqlite_worker,
    sqlite_path,
    storage_url,
)

__all__ = [
    "DEFAULT_STORAGE",
    "OBJECTIVES",
    "Heartbeat",
    "engine_kwargs",
    "open_storage",
    "redact",
    "sole_sqlite_worker",
    "sqlite_path",
    "storage_url",
    "summaries",
]
