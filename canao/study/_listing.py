"""Study summaries read with a few aggregate queries, however many studies and trials.

``canao status`` and the service's study listing need, per study, its trial counts by
state, the best value of each objective and canao's record of it. Loading every study
through Optuna (every trial with its parameters and attributes) grows with the number of
trials stored; these queries read Optuna's own tables (``studies``, ``trials``,
``trial_values``, ``study_user_attributes``, ``trial_user_attributes``: Optuna's RDB
schema, which ``optuna.load_study`` reads too) and canao's ``canao_drift``, grouped in the
database.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import sqlalchemy as sa

from canao.errors import StorageError
from canao.study._storage import engine_kwargs, open_storage, redact
from canao.targets import DeviceIdentity

_ATTR = "canao"  # the study user attribute holding canao's record (see _study)
OBJECTIVES = ("accuracy", "latency_ms", "memory_mb")

_meta = sa.MetaData()
_studies = sa.Table("studies", _meta, sa.Column("study_id", sa.Integer),
                    sa.Column("study_name", sa.String))
_trials = sa.Table("trials", _meta, sa.Column("trial_id", sa.Integer),
                   sa.Column("study_id", sa.Integer), sa.Column("state", sa.String),
                   sa.Column("datetime_start", sa.DateTime),
                   sa.Column("datetime_complete", sa.DateTime))
_dt_start, _dt_complete = _trials.c.datetime_start, _trials.c.datetime_complete
_values = sa.Table("trial_values", _meta, sa.Column("trial_id", sa.Integer),
                   sa.Column("objective", sa.Integer), sa.Column("value", sa.Float),
                   sa.Column("value_type", sa.String))
_study_attrs = sa.Table("study_user_attributes", _meta, sa.Column("study_id", sa.Integer),
                        sa.Column("key", sa.String), sa.Column("value_json", sa.Text))
_trial_attrs = sa.Table("trial_user_attributes", _meta, sa.Column("trial_id", sa.Integer),
                        sa.Column("key", sa.String), sa.Column("value_json", sa.Text))
_drift = sa.Table("canao_drift", _meta, sa.Column("id", sa.Integer),
                  sa.Column("study_name", sa.String), sa.Column("ratio", sa.Float))

# Optuna stores states and value types as enums (a PostgreSQL ENUM type, text in SQLite):
# compared and grouped as text, the same query serves both.
_STATE = sa.cast(_trials.c.state, sa.String)
_VALUE_TYPE = sa.cast(_values.c.value_type, sa.String)

_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


def _engine(url: str) -> sa.Engine:
    """One engine per database, made after Optuna has checked (or created) its schema."""
    with _lock:
        if url not in _engines:
            open_storage(url, must_exist=True)  # a missing file or server: a clear error
            _engines[url] = sa.create_engine(url, **engine_kwargs(url))
        return _engines[url]


def summaries(storage_url: str, name: str | None = None) -> list[dict[str, Any]]:
    """Per study: trial counts by state, the best value of each objective, its space,
    target and device, and its drift readings (see :func:`canao.study.summaries`)."""
    engine = _engine(storage_url)
    try:
        with engine.connect() as con:
            if name is not None:
                return _read(con, storage_url, name)
            # The whole listing is read again only when the database changed since.
            signature = _signature(con)
            cached = _listings.get(storage_url)
            if cached is None or cached[0] != signature:
                cached = _listings[storage_url] = (signature, _read(con, storage_url, None))
            return list(cached[1])
    except sa.exc.SQLAlchemyError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(f"cannot read study database {redact(storage_url)}: {reason}") from e


def _signature(con: sa.Connection) -> tuple[Any, ...]:
    """What changes whenever any study's summary can: studies and trials added, trials
    started and finished (Optuna sets their start and completion times with the state),
    canao's study records rewritten (their summed length: canao rewrites a record only to
    add a device to it), drift readings added."""
    trials = con.execute(sa.select(
        sa.func.count(), sa.func.max(_trials.c.trial_id), sa.func.count(_dt_start),
        sa.func.count(_dt_complete))).one()
    studies = con.execute(sa.select(
        sa.func.count(), sa.func.max(_study_attrs.c.study_id),
        sa.func.sum(sa.func.length(_study_attrs.c.value_json)))
        .where(_study_attrs.c.key == _ATTR)).one()
    n_studies = con.execute(sa.select(sa.func.count()).select_from(_studies)).scalar()
    drift = (con.execute(sa.select(sa.func.count()).select_from(_drift)).scalar()
             if _has_drift_table(con) else None)
    return (*trials, *studies, n_studies, drift)


_listings: dict[str, tuple[tuple[Any, ...], list[dict[str, Any]]]] = {}


def _read(con: sa.Connection, url: str, name: str | None) -> list[dict[str, Any]]:
    studies = dict(con.execute(sa.select(_studies.c.study_id, _studies.c.study_name)).all())
    if name is not None:
        if name not in studies.values():
            known = ", ".join(sorted(studies.values())) or "none"
            raise StorageError(f"no study '{name}' in {redact(url)} (studies there: {known})")
        studies = {k: v for k, v in studies.items() if v == name}
    ids = list(studies)
    counts: dict[int, dict[str, int]] = {i: {} for i in ids}
    for sid, state, n in con.execute(
            sa.select(_trials.c.study_id, _STATE, sa.func.count())
            .where(_trials.c.study_id.in_(ids)).group_by(_trials.c.study_id, _STATE)):
        counts[sid][str(state)] = int(n)
    best: dict[int, dict[str, float | None]] = {i: dict.fromkeys(OBJECTIVES) for i in ids}
    complete = sa.and_(_STATE == "COMPLETE", _VALUE_TYPE == "FINITE")
    for sid, objective, high, low in con.execute(
            sa.select(_trials.c.study_id, _values.c.objective, sa.func.max(_values.c.value),
                      sa.func.min(_values.c.value))
            .join(_values, _values.c.trial_id == _trials.c.trial_id)
            .where(_trials.c.study_id.in_(ids), complete)
            .group_by(_trials.c.study_id, _values.c.objective)):
        if 0 <= objective < len(OBJECTIVES):
            best[sid][OBJECTIVES[objective]] = float(high if objective == 0 else low)
    records = {sid: json.loads(v) for sid, v in con.execute(
        sa.select(_study_attrs.c.study_id, _study_attrs.c.value_json)
        .where(_study_attrs.c.study_id.in_(ids), _study_attrs.c.key == _ATTR))}
    flagged: dict[int, int] = dict(con.execute(
        sa.select(_trials.c.study_id, sa.func.count())
        .join(_trial_attrs, _trial_attrs.c.trial_id == _trials.c.trial_id)
        .where(_trials.c.study_id.in_(ids), _STATE == "COMPLETE",
               _trial_attrs.c.key == "drift_flagged").group_by(_trials.c.study_id)).all())
    drift = _drift_by_study(con, list(studies.values()))
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
        n_trials = sum(counts[sid].values())
        out.append({"study": study, "space": rec.get("space_name"),
                    "target": rec.get("profile_name"),
                    "device": described[0], "device_key": described[1],
                    "trials": n_trials, "states": dict(sorted(counts[sid].items())),
                    "best": best[sid], "drift": drift.get(study),
                    "drift_flagged": int(flagged.get(sid, 0))})
    return out


def _has_drift_table(con: sa.Connection) -> bool:
    """Whether canao's drift table exists (asked once per database: schemas only grow)."""
    url = con.engine.url.render_as_string(hide_password=False)
    if not _has_drift.get(url):
        _has_drift[url] = sa.inspect(con).has_table("canao_drift")
    return _has_drift[url]


_has_drift: dict[str, bool] = {}


def _drift_by_study(con: sa.Connection, names: list[str]) -> dict[str, dict[str, Any]]:
    """Readings count, latest ratio and largest deviation per study (none before the
    schema that stores them)."""
    if not names or not _has_drift_table(con):
        return {}
    out: dict[str, dict[str, Any]] = {}
    rows = con.execute(sa.select(_drift.c.study_name, _drift.c.ratio)
                       .where(_drift.c.study_name.in_(names)).order_by(_drift.c.id))
    for study, ratio in rows:
        d = out.setdefault(study, {"readings": 0, "latest_ratio": 1.0, "max_deviation": 0.0})
        d["readings"] += 1
        d["latest_ratio"] = float(ratio)
        d["max_deviation"] = max(d["max_deviation"], abs(float(ratio) - 1))
    return out
