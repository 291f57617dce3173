"""Device target profiles (``tvm_targets/*.json``)."""

from canao.targets._profile import (
    BuildConfig,
    MeasureConfig,
    RemoteConfig,
    TargetProfile,
    TuningConfig,
    load_profile,
    parse_profile,
)

__all__ = [
    "BuildConfig",
    "MeasureConfig",
    "RemoteConfig",
    "TargetProfile",
    "TuningConfig",
    "load_profile",
    "parse_profile",
]
