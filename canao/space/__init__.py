"""Search spaces: parse and validate YAML; sample an :class:`ArchConfig` from a trial."""

from canao.space._space import (
    MAX_SPACE_BYTES,
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
    "MAX_SPACE_BYTES",
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
