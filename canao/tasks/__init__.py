"""Built-in offline tasks; no torch, no TVM, no downloads."""

from canao.tasks._base import SPLITS, Split, Task, accuracy, get_task, register_task, task_names
from canao.tasks._digits import DigitsTask

register_task("digits", DigitsTask)

__all__ = [
    "SPLITS",
    "DigitsTask",
    "Split",
    "Task",
    "accuracy",
    "get_task",
    "register_task",
    "task_names",
]
