"""Device target profiles: TVM's own target dict plus how to measure on it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canao import _config
from canao.errors import TargetError
from canao.space import resolve_shipped

PROFILE_VERSION = 1
MAX_PROFILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class MeasureConfig:
    """The timing protocol. Every repeat is kept; statistics come from the samples.

    One repeat runs the model ``number`` times and records the mean; ``repeat`` such
    samples are taken after ``warmup`` untimed runs.
    """

    warmup: int = 5
    number: int = 20
    repeat: int = 15
    min_repeat_ms: int = 0  # raise ``number`` until one repeat lasts this long
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_repeat_ms < 0:
            raise ValueError("'warmup' and 'min_repeat_ms' must be >= 0")
        if self.number < 1 or self.repeat < 1 or self.batch_size < 1:
            raise ValueError("'number', 'repeat' and 'batch_size' must be >= 1")


@dataclass(frozen=True)
class BuildConfig:
    timeout_s: float = 600.0  # a build or measurement that runs longer fails its trial

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"'build.timeout_s' must be positive, got {self.timeout_s}")


@dataclass(frozen=True)
class TargetProfile:
    """A parsed target profile.

    ``target`` is a TVM target in TVM's JSON-dict vocabulary (``kind``, ``mtriple``,
    ``mcpu``, ``mattr``, ``num-cores``, ``host``). canao adds one convenience:
    ``"mcpu": "host"`` is replaced by the CPU LLVM detects on the building machine.
    """

    name: str
    target: dict[str, Any]
    version: int = PROFILE_VERSION
    description: str = ""
    threads: int = 1  # runtime threads (TVM_NUM_THREADS) while measuring
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    build: BuildConfig = field(default_factory=BuildConfig)

    def __post_init__(self) -> None:
        if self.version != PROFILE_VERSION:
            raise ValueError(f"'version' must be {PROFILE_VERSION}, got {self.version}")
        kind = self.target.get("kind")
        if not isinstance(kind, str) or not kind:
            raise ValueError("'target' must name its 'kind' (for example \"llvm\")")
        if self.threads < 1:
            raise ValueError(f"'threads' must be >= 1, got {self.threads}")

    @property
    def device_type(self) -> str:
        """Where the compiled module runs: ``cpu`` for llvm, else the target kind."""
        return "cpu" if self.target["kind"] in ("llvm", "c") else str(self.target["kind"])

    def to_dict(self) -> dict[str, Any]:
        return _config.to_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def parse_profile(text: str, *, where: str = "<string>", name: str = "") -> TargetProfile:
    if len(text.encode()) > MAX_PROFILE_BYTES:
        raise TargetError(f"{where}: larger than {MAX_PROFILE_BYTES} bytes; not a target profile")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TargetError(f"{where}: not valid JSON at line {e.lineno}, column {e.colno}: "
                          f"{e.msg}") from e
    if isinstance(data, dict) and not data.get("name"):
        data = {**data, "name": name}
    return _config.build(TargetProfile, data, where=where, path="", error=TargetError)


def load_profile(path: str | Path) -> TargetProfile:
    """Read a target profile; a shipped one may be named without folder or suffix."""
    p = resolve_shipped(path, "tvm_targets", ".json", TargetError, "target profile")
    return parse_profile(p.read_text(), where=str(p), name=p.stem)
