"""Study summaries read with a few aggregate queries, however many studies and trials.

``canao status`` and the service's study listing need, per study, its trial counts by
state, the best value of each objective and canao's record of it. Loading every study
through Optuna (every trial with its parameters and attributes) grows with the number of
trials stored; these queries read Optuna's own tables (``studies``, ``trials``,
``trial_values``, ``study_user_attributes``, ``trial_user_attributes``: Optuna's RDB
schema, which ``optuna.load_study`` reads too) and canao's ``canao_drift``, grouped in the
database.

The statements are plain SQL without parameters, which SQLite and PostgreSQL (and any
database Optuna supports) read alike, run on the driver's own connection: SQLite and
``postgresql+psycopg`` URLs open it directly, so ``canao status`` loads neither Optuna nor
SQLAlchemy (together most of a second of start-up); other URLs borrow one from a
SQLAlchemy engine.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

from canao.db._storage import engine_kwargs, redact, sqlite_path
from canao.errors import StorageError
from canao.targets import DeviceIdentity

_ATTR = "canao"  # the study user attribute holding canao's record (see canao.study._study)
OBJECTIVES = ("accuracy", "latency_ms", "memory_mb")

# Optuna stores states and value types as enums (a PostgreSQL ENUM type, text in SQLite):
# compared and grouped as text, the same statement serves both.
_STATE = "CAST(t.state AS VARCHAR(16))"
_COMPLETE = f"{_STATE} = 'COMPLETE'"
_SQL = {
    "studies": "SELECT study_id, study_name FROM studies",
    "counts": f"SELECT t.study_id, {_STATE}, COUNT(*) FROM trials t GROUP BY t.study_id, {_STATE}",
    "best": ("SELECT t.study_id, v.objective, MAX(v.value), MIN(v.value) FROM trials t "
             "JOIN trial_values v ON v.trial_id = t.trial_id WHERE "
             f"{_COMPLETE} AND CAST(v.value_type AS VARCHAR(16)) = 'FINITE' "
             "GROUP BY t.study_id, v.objective"),
    "records": f"SELECT study_id, value_json FROM study_user_attributes WHERE key = '{_ATTR}'",
    "flagged": ("SELECT t.study_id, COUNT(*) FROM trials t JOIN trial_user_attributes a "
                f"ON a.trial_id = t.trial_id WHERE {_COMPLETE} AND a.key = 'drift_flagged' "
                "GROUP BY t.study_id"),
    "drift": "SELECT study_name, ratio FROM canao_drift ORDER BY id",
    # What changes whenever any study's summary can: studies and trials added, trials started
    # and finished (Optuna sets their start and completion times with the state), canao's
    # study records rewritten (their summed length: canao rewrites a record only to add a
    # device to it).
    "signature": ("SELECT (SELECT COUNT(*) FROM studies), (SELECT COUNT(*) FROM trials), "
                  "(SELECT MAX(trial_id) FROM trials), (SELECT COUNT(datetime_start) FROM trials), "
                  "(SELECT COUNT(datetime_complete) FROM trials), "
                  "(SELECT COUNT(*) FROM study_user_attributes WHERE key = 'canao'), "
                  "(SELECT SUM(LENGTH(value_json)) FROM study_user_attributes "
                  "WHERE key = 'canao')"),
    "drift_signature": "SELECT COUNT(*) FROM canao_drift",
    "ping": "SELECT 1",
}


class _Reader:
    """One connection to one database, shared by threads one query run at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.Lock()
        self.con: Any = None
        self.tables: set[str] = set()  # tables seen to exist (schemas only grow)
        self.listing: tuple[tuple[Any, ...], list[dict[str, Any]]] | None = None

    def _connect(self) -> Any:
        path = sqlite_path(self.url)
        if path is not None:
            if not path.is_file():
                raise StorageError(f"study database {redact(self.url)}: file {path} does not exist")
            # A search may hold the file's write lock: wait for it, as Optuna's engine does.
            return sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
        try:
            if self.url.startswith("postgresql+psycopg://"):
                import psycopg

                return psycopg.connect("postgresql://" + self.url.split("://", 1)[1],
                                       autocommit=True, connect_timeout=10)
            import sqlalchemy as sa

            return sa.create_engine(self.url, **engine_kwargs(self.url)).raw_connection()
        except Exception as e:  # the driver's own errors: a refused connection, a bad URL
            raise StorageError(f"cannot open study database {redact(self.url)}: {_reason(e)}") \
                from e

    def rows(self, name: str) -> list[tuple[Any, ...]]:
        cur = self.con.cursor()
        try:
            cur.execute(_SQL[name])
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def has_table(self, table: str) -> bool:
        if table not in self.tables:
            try:
                cur = self.con.cursor()
                cur.execute(f"SELECT 1 FROM {table} WHERE 1 = 0")
                cur.close()
                self.tables.add(table)
            except Exception:
                self.con.rollback()  # a failed statement ends PostgreSQL's transaction
        return table in self.tables

    def read(self, name: str | None) -> list[dict[str, Any]]:
        with self.lock:
            for attempt in (0, 1):  # a connection the server dropped is opened again, once
                fresh = self.con is None
                if fresh:
                    self.con = self._connect()
                try:
                    self.rows("ping")
                    break
                except Exception as e:
                    self._drop()
                    if fresh or attempt:
                        raise StorageError(f"cannot open study database {redact(self.url)}: "
                                           f"{_reason(e)}") from e
            try:
                return self._read(name)
            except StorageError:
                raise
            except Exception as e:
                self._drop()
                raise StorageError(f"cannot read study database {redact(self.url)}: "
                                   f"{_reason(e)}") from e

    def _drop(self) -> None:
        try:
            self.con.close()
        except Exception:
            pass
        self.con = None

    def _read(self, name: str | None) -> list[dict[str, Any]]:
        if not self.has_table("studies"):  # a new database: Optuna makes its tables later
            if name is not None:
                raise StorageError(f"no study '{name}' in {redact(self.url)} (studies there: none)")
            return []
        drift = self.has_table("canao_drift")
        signature = (*self.rows("signature")[0], self.rows("drift_signature")[0] if drift else None)
        if self.listing is None or self.listing[0] != signature:
            self.listing = (signature, self._summaries(drift))
        listing = self.listing[1]
        if name is None:
            return list(listing)
        chosen = [r for r in listing if r["study"] == name]
        if not chosen:
            known = ", ".join(r["study"] for r in listing) or "none"
            raise StorageError(f"no study '{name}' in {redact(self.url)} (studies there: {known})")
        return chosen

    def _summaries(self, has_drift: bool) -> list[dict[str, Any]]:
        studies = dict(self.rows("studies"))
        counts: dict[int, dict[str, int]] = {i: {} for i in studies}
        for sid, state, n in self.rows("counts"):
            counts.setdefault(sid, {})[str(state)] = int(n)
        best: dict[int, dict[str, float | None]] = {i: dict.fromkeys(OBJECTIVES) for i in studies}
        for sid, objective, high, low in self.rows("best"):
            if sid in best and 0 <= objective < len(OBJECTIVES):
                best[sid][OBJECTIVES[objective]] = float(high if objective == 0 else low)
        records = {sid: json.loads(v) for sid, v in self.rows("records")}
        flagged = dict(self.rows("flagged"))
        drift = _drift_by_study(self.rows("drift") if has_drift else [])
        devices: dict[str, tuple[str, str]] = {}  # studies on one device share its description
        out = []
        for sid, study in sorted(studies.items(), key=lambda kv: kv[1]):
            rec = records.get(sid) or {}
            described: tuple[str | None, str | None] = (None, None)
            if rec.get("device"):
                blob = json.dumps(rec["device"], sort_keys=True)
                if blob not in devices:
                    d = DeviceIdentity.from_dict(rec["device"], where=f"study '{study}' device")
                    devices[blob] = (d.describe(), d.key)
                described = devices[blob]
            out.append({"study": study, "space": rec.get("space_name"),
                        "target": rec.get("profile_name"),
                        "device": described[0], "device_key": described[1],
                        "trials": sum(counts[sid].values()),
                        "states": dict(sorted(counts[sid].items())),
                        "best": best[sid], "drift": drift.get(study),
                        "drift_flagged": int(flagged.get(sid, 0))})
        return out


def _drift_by_study(rows: list[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    """Readings count, latest ratio and largest deviation per study (rows in reading order)."""
    out: dict[str, dict[str, Any]] = {}
    for study, ratio in rows:
        d = out.setdefault(study, {"readings": 0, "latest_ratio": 1.0, "max_deviation": 0.0})
        d["readings"] += 1
        d["latest_ratio"] = float(ratio)
        d["max_deviation"] = max(d["max_deviation"], abs(float(ratio) - 1))
    return out


def _reason(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


_readers: dict[str, _Reader] = {}
_lock = threading.Lock()


def summaries(storage_url: str, name: str | None = None) -> list[dict[str, Any]]:
    """Per study: trial counts by state, the best value of each objective, its space,
    target and device, and its drift readings (see :mod:`canao.db`).

    One study's summary is read like the whole listing's (a few grouped statements, cached
    until the database changes), then chosen: the statements stay free of parameters.
    """
    with _lock:
        reader = _readers.setdefault(storage_url, _Reader(storage_url))
    return reader.read(name)
