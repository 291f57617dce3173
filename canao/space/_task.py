"""A space's task, ready for its base: image tasks by name, text tasks with the base's tokenizer."""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any

from canao.cache import cache_dir
from canao.errors import TaskError
from canao.space._checkpoint import check_checkpoint
from canao.space._space import ModelSpec, SearchSpace
from canao.tasks import (
    Task,
    TextData,
    TextTask,
    checkpoint_folder,
    get_task,
    is_text_task,
    text_data,
    tokenizer_from_folder,
    tokenizer_from_json,
)
from canao.tasks._tokens import train_wordpiece

_TOKENIZER_RECIPE = 1  # bump when train_wordpiece changes what a cached vocabulary would be

def base_tokenizer(model: ModelSpec, data: TextData) -> Any:
    """The tokenizer of a base: the checkpoint's own, or WordPiece trained on the train split."""
    if model.checkpoint:
        return tokenizer_from_folder(checkpoint_folder(model.checkpoint))
    key = hashlib.sha256(f"{data.digest()}|{model.vocab_size}|{_TOKENIZER_RECIPE}".encode())
    path = cache_dir() / "tokenizers" / f"{key.hexdigest()[:16]}.json"
    if path.is_file():
        return tokenizer_from_json(path.read_text())
    tok = train_wordpiece(data.texts["train"], model.vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tok-")
    with os.fdopen(fd, "w") as f:
        f.write(tok.to_str())
    os.replace(tmp, path)
    return tok


def load_task(space: SearchSpace) -> Task:
    """The task a search space names, tokenised for its base when it is a text task."""
    if not is_text_task(space.task):
        return get_task(space.task)
    data = text_data(space.task, space.data)
    m = space.base.model
    if m.frontend != "token":
        raise TaskError(f"task '{space.task}' is text: its base needs 'frontend: token'")
    return TextTask(data, base_tokenizer(m, data), m.max_len)


def check_task(space: SearchSpace) -> None:
    """Read a space's task data (and its checkpoint) now, so that a bad file, column or
    checkpoint fails before a study exists."""
    if is_text_task(space.task):
        text_data(space.task, space.data)
    else:
        get_task(space.task)
    if space.base.model.checkpoint:
        check_checkpoint(checkpoint_folder(space.base.model.checkpoint), space.base.model,
                         f"space '{space.name}'")
