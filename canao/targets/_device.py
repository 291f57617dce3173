"""A device is an identity, not a word: what a profile's target resolves to on a machine.

``"mcpu": "host"`` means a different CPU on every machine, so nothing is keyed by the
profile alone. When a study is created, canao resolves the profile's target into a
:class:`DeviceIdentity` (the LLVM CPU name and the feature set TVM compiles for, the CPU
model that runs the module, the threads used, the TVM and LLVM versions) and stores it
with the study. Artifact-cache keys, tuning databases, provenance rows and bundles carry
its :attr:`DeviceIdentity.key`; a worker whose identity differs from its study's is
refused, so one front never mixes devices.

The resolution itself needs TVM and lives in :mod:`canao.compile` (``resolve_device``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from canao import _config
from canao.errors import TargetError

DEVICE_VERSION = 1

# LLVM feature names that name an instruction-set extension a compiled library may use and
# that /proc/cpuinfo reports (after normalising: lower case, no '_' or '.'). Features outside
# this list (tuning hints such as 'fast-scalar-fsqrt') say nothing a CPU can lack.
_ISA_PREFIXES = ("sse", "ssse3", "avx", "fma", "f16c", "bmi", "amx", "vaes", "vpclmulqdq",
                 "gfni", "sha", "aes", "pclmul", "popcnt", "movbe", "lzcnt", "adx")


def normalise_feature(name: str) -> str:
    """One spelling for LLVM's and the kernel's names (``avx512vnni`` = ``avx512_vnni``)."""
    return name.lower().lstrip("+").replace("_", "").replace(".", "").replace("-", "")


# The kernel's names for features LLVM spells otherwise.
_KERNEL_ALIASES = {"pni": "sse3", "abm": "lzcnt", "bmi1": "bmi", "pclmulqdq": "pclmul",
                   "shani": "sha"}


def isa_features(compiled: Iterable[str]) -> list[str]:
    """Of LLVM's compiled-for features, those a CPU must have to run the code (normalised)."""
    return sorted({normalise_feature(f) for f in compiled
                   if normalise_feature(f).startswith(_ISA_PREFIXES)})


def missing_features(compiled: Iterable[str], cpu_flags: set[str]) -> list[str]:
    """The ISA features of ``compiled`` (LLVM names) that ``cpu_flags`` (the kernel's) lack."""
    have = {normalise_feature(f) for f in cpu_flags}
    have |= {_KERNEL_ALIASES[f] for f in have if f in _KERNEL_ALIASES}
    return [f for f in isa_features(compiled) if f not in have]


@dataclass(frozen=True)
class DeviceIdentity:
    """What a build and its measurement ran on, resolved; equal identities are one device.

    Attributes:
        target: the TVM target dict with ``mcpu`` resolved (never ``"host"``).
        features: the LLVM features that target compiles for (``avx2``, ``avx512vnni``, ...).
        cpu: the CPU model that runs and times the module (local ``/proc/cpuinfo``, or the
            remote device's as read through its RPC session).
        threads: runtime threads used while measuring.
        tvm: TVM's version; llvm: LLVM's.
        where: ``local`` or ``rpc:KEY``.
    """

    target: dict[str, Any]
    features: tuple[str, ...]
    cpu: str
    threads: int
    tvm: str
    llvm: str
    where: str = "local"
    version: int = DEVICE_VERSION

    def __post_init__(self) -> None:
        if self.target.get("mcpu") == "host":
            raise ValueError("a device identity holds a resolved CPU, never 'host'")

    @functools.cached_property
    def key(self) -> str:
        """Content key of the identity: the name of its tuning database and cache entries."""
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def mcpu(self) -> str:
        return str(self.target.get("mcpu") or self.target.get("arch") or self.target["kind"])

    def describe(self) -> str:
        where = "" if self.where == "local" else f" via {self.where}"
        return (f"{self.mcpu} on {self.cpu}{where}, {self.threads} thread(s), TVM {self.tvm}, "
                f"LLVM {self.llvm} [{self.key}]")

    def missing_on(self, cpu_flags: set[str]) -> list[str]:
        """Compiled-for ISA features absent from ``cpu_flags`` (a CPU's ``/proc/cpuinfo``)."""
        return missing_features(self.features, cpu_flags)

    def differences(self, other: DeviceIdentity) -> list[str]:
        """The fields in which ``other`` differs, as ``name: ours != theirs`` lines."""
        a, b = self.to_dict(), other.to_dict()
        out = []
        for k in sorted(a):
            if a[k] != b[k]:
                if k == "features":
                    gone = sorted(set(a[k]) - set(b[k]))
                    new = sorted(set(b[k]) - set(a[k]))
                    out.append(f"features: {len(gone)} fewer {gone[:4]}, {len(new)} more {new[:4]}")
                else:
                    out.append(f"{k}: {a[k]} != {b[k]}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return _config.to_dict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "device identity") -> DeviceIdentity:
        return _config.build(cls, data, where=where, path="", error=TargetError)
