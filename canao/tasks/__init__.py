"""Built-in offline tasks; no torch, no TVM, no downloads at import."""

from canao.tasks._digits import DigitsTask
from canao.tasks._load import (
    PRETRAINED,
    checkpoint_folder,
    is_text_task,
    text_data,
)
from canao.tasks._task import SPLITS, Split, Task, accuracy, get_task, register_task
from canao.tasks._text import TableSpec, TextData, TextTask
from canao.tasks._tokens import encode, pad_id, tokenizer_from_folder, tokenizer_from_json

register_task("digits", DigitsTask)

__all__ = [
    "PRETRAINED",
    "SPLITS",
    "DigitsTask",
    "Split",
    "TableSpec",
    "Task",
    "TextData",
    "TextTask",
    "accuracy",
    "checkpoint_folder",
    "encode",
    "get_task",
    "is_text_task",
    "pad_id",
    "register_task",
    "text_data",
    "tokenizer_from_folder",
    "tokenizer_from_json",
]
