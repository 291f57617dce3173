"""Optuna studies: creation and loading, the objective, the run, the Pareto front."""


from canao.candidate import CANDIDATE_FILE, candidate_key
from canao.study._objective import Objective, artifact_dir, tuning_dir
from canao.study._run import Terminated, run
from canao.study._setup import SearchPlan, plan_search, with_task
from canao.study._study import (
    DIRECTIONS,
    OBJECTIVES,
    CanaoStudy,
    check_device,
    check_study_name,
    create,
    front,
    is_feasible,
    load,
    quiet_optuna,
    recover_orphans,
    study_base_accuracy,
    trial_row,
    violations,
    with_overrides,
)

__all__ = [
    "SearchPlan",
    "plan_search",
    "with_task",
    "CANDIDATE_FILE",
    "DIRECTIONS",
    "OBJECTIVES",
    "CanaoStudy",
    "Objective",
    "Terminated",
    "artifact_dir",
    "candidate_key",
    "check_device",
    "check_study_name",
    "create",
    "front",
    "is_feasible",
    "load",
    "quiet_optuna",
    "recover_orphans",
    "run",
    "study_base_accuracy",
    "trial_row",
    "tuning_dir",
    "violations",
    "with_overrides",
]
