"""Device target profiles (``tvm_targets/*.json``)."""

from canao.targets._profile import (
    BuildConfig,
    MeasureConfig,
    TargetProfile,
    TuningConfig,
    load_profile,
    parse_profile,
)

__all__ = ["BuildConfig", "MeasureConfig", "TargetProfile", "TuningConfig", "load_profile", "parse_profile"]
