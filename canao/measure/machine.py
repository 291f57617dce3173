"""A description of the machine a measurement ran on, stored with every measurement."""

from __future__ import annotations

import os
import platform
from typing import Any


def _cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` line of ``/proc/cpuinfo`` (None where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (``AMD EPYC``, ``Intel Xeon ...``)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str] | None:
    """The instruction-set flags of this CPU (``/proc/cpuinfo``); None where not readable."""
    flags = _cpuinfo_field("flags") or _cpuinfo_field("Features")  # x86 / Arm spelling
    return set(flags.split()) if flags else None


def describe_machine() -> dict[str, Any]:
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {"host": platform.node(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "loadavg": load,
            "python": platform.python_version()}
