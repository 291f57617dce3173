"""One root exception for everything canao raises on purpose.

Each subclass also inherits the built-in exception that matches its meaning, so callers
that only know Python's vocabulary (``ValueError``, ``FileNotFoundError``) still catch it.
The CLI maps every :class:`CanaoError` to exit code 2 and a one-line message.
"""

from __future__ import annotations


class CanaoError(Exception):
    """Root of canao's exceptions: a user-facing problem with a message that names it."""


class SpaceError(CanaoError, ValueError):
    """A search-space file is missing, malformed, or asks for something impossible."""


class TargetError(CanaoError, ValueError):
    """A target profile is missing, malformed, or names a target TVM cannot build for."""


class TaskError(CanaoError, ValueError):
    """A task name is unknown or its data cannot be read."""


class StorageError(CanaoError, RuntimeError):
    """The study database cannot be reached, or holds no such study."""


class CandidateError(CanaoError, RuntimeError):
    """A candidate could not be built, compiled or measured; it fails its trial only."""


class ExportError(CanaoError, RuntimeError):
    """No trial meets the export request, or the bundle cannot be written or read."""
