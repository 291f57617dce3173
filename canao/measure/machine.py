"""A description of the machine a measurement ran on, stored with every measurement."""

from __future__ import annotations

import os
import platform
from typing import Any


def describe_machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {"host": platform.node(), "cpu": cpu, "cpus": os.cpu_count(),
            "machine": platform.machine(), "loadavg": load,
            "python": platform.python_version()}
