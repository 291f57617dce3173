"""Measurement: latency statistics from raw samples, and the machine description."""

from canao.measure.machine import cpu_flags, cpu_model, describe_machine
from canao.measure.stats import summarize

__all__ = ["cpu_flags", "cpu_model", "describe_machine", "summarize"]
