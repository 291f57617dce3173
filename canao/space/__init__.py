"""Search spaces: parse and validate YAML; sample an :class:`ArchConfig` from a trial."""

from canao.space._space import (
    WEIGHT_KINDS,
    ArchConfig,
    BaseSpec,
    Budgets,
    CandidateSpec,
    ModelSpec,
    RecoverySpec,
    SearchDims,
    SearchSpace,
    SlimmingSpec,
    TrainSpec,
    load_space,
    parse_space,
    resolve_shipped,
    shipped_dir,
)

__all__ = [
    "ArchConfig",
    "BaseSpec",
    "Budgets",
    "CandidateSpec",
    "ModelSpec",
    "RecoverySpec",
    "SearchDims",
    "SearchSpace",
    "SlimmingSpec",
    "TrainSpec",
    "WEIGHT_KINDS",
    "load_space",
    "parse_space",
    "resolve_shipped",
    "shipped_dir",
]
