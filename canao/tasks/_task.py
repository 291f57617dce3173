"""The task contract and its registry."""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from canao.errors import TaskError

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Split:
    x: np.ndarray
    y: np.ndarray  # int64 class labels

    def __len__(self) -> int:
        return len(self.y)


class Task(abc.ABC):
    """A labelled classification task with fixed, seeded splits.

    Contract:
        * ``split(name)`` returns the same arrays in every process and on every call
          (splits are seeded and never depend on global random state);
        * inputs are what the model's front end takes: ``float32`` images of shape
          ``(N, C, H, W)`` for ``frontend == "patch"``, ``int64`` token ids of shape
          ``(N, T)`` for ``frontend == "token"``;
        * nothing is downloaded; a missing data source raises :class:`TaskError`;
        * it imports neither torch nor TVM, so a deployed bundle can be checked with it.
    """

    name: str
    num_classes: int
    frontend: str

    @abc.abstractmethod
    def split(self, name: str) -> Split:
        """One of :data:`SPLITS`."""

    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` for image tasks."""
        raise TaskError(f"task '{self.name}' has no images")

    def digest(self) -> str:
        """Content digest of all splits: a cache key that changes when the data does."""
        h = hashlib.sha256(self.name.encode())
        for s in SPLITS:
            part = self.split(s)
            h.update(np.ascontiguousarray(part.x).tobytes())
            h.update(np.ascontiguousarray(part.y).tobytes())
        return h.hexdigest()[:16]


_REGISTRY: dict[str, Callable[[], Task]] = {}


def register_task(name: str, factory: Callable[[], Task]) -> None:
    if name in _REGISTRY:
        raise ValueError(f"task '{name}' is already registered")
    _REGISTRY[name] = factory


def get_task(name: str) -> Task:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise TaskError(f"unknown task '{name}'; known tasks: {', '.join(sorted(_REGISTRY))}, and "
                        "the text tasks rotten-tomatoes, csv:PATH and jsonl:PATH") from None


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(logits).argmax(axis=1) == np.asarray(labels)).mean())
