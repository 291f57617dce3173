"""Device target profiles (``tvm_targets/*.json``) and the device identities they resolve to."""

from canao.targets._device import DeviceIdentity, missing_features, normalise_feature
from canao.targets._profile import (
    MAX_PROFILE_BYTES,
    BuildConfig,
    DriftConfig,
    MeasureConfig,
    RemoteConfig,
    TargetProfile,
    TuningConfig,
    load_profile,
    parse_profile,
)

__all__ = [
    "MAX_PROFILE_BYTES",
    "BuildConfig",
    "DeviceIdentity",
    "DriftConfig",
    "MeasureConfig",
    "RemoteConfig",
    "TargetProfile",
    "TuningConfig",
    "load_profile",
    "missing_features",
    "normalise_feature",
    "parse_profile",
]
