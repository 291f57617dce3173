"""Measurement: latency statistics from raw samples, and the machine description."""

from canao.measure.machine import describe_machine
from canao.measure.stats import summarize

__all__ = ["describe_machine", "summarize"]
