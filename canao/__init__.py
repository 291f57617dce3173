"""canao: compiler-aware neural architecture search for transformers.

Importing :mod:`canao` stays light: it pulls in neither torch nor TVM. The heavy parts
live in :mod:`canao.models`, :mod:`canao.compress` (torch) and :mod:`canao.compile`,
:mod:`canao.runtime` (TVM) and are imported only where they are used.
"""

from canao.errors import (
    CanaoError,
    CandidateError,
    ExportError,
    SpaceError,
    StorageError,
    TargetError,
    TaskError,
)

__version__ = "0.1.0"

__all__ = [
    "CanaoError",
    "CandidateError",
    "ExportError",
    "SpaceError",
    "StorageError",
    "TargetError",
    "TaskError",
    "__version__",
]
