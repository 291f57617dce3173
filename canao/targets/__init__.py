"""Device target profiles (``tvm_targets/*.json``)."""

from canao.targets._profile import (
    BuildConfig,
    MeasureConfig,
    TargetProfile,
    load_profile,
    parse_profile,
)

__all__ = ["BuildConfig", "MeasureConfig", "TargetProfile", "load_profile", "parse_profile"]
