"""Optuna studies: storage, objectives, the Pareto front."""

from canao.study._objective import CANDIDATE_FILE, Objective, artifact_dir, run, tuning_dir
from canao.study._storage import (
    DEFAULT_STORAGE,
    Heartbeat,
    open_storage,
    redact,
    sole_sqlite_worker,
    storage_url,
)
from canao.study._study import (
    DIRECTIONS,
    OBJECTIVES,
    CanaoStudy,
    as_json,
    check_study_name,
    create,
    front,
    is_feasible,
    load,
    pareto,
    summaries,
    trial_row,
    with_overrides,
)

__all__ = [
    "CANDIDATE_FILE",
    "DEFAULT_STORAGE",
    "DIRECTIONS",
    "Heartbeat",
    "OBJECTIVES",
    "CanaoStudy",
    "Objective",
    "artifact_dir",
    "as_json",
    "check_study_name",
    "create",
    "front",
    "is_feasible",
    "load",
    "open_storage",
    "pareto",
    "redact",
    "run",
    "sole_sqlite_worker",
    "storage_url",
    "summaries",
    "trial_row",
    "tuning_dir",
    "with_overrides",
]
