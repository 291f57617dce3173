"""The base model of a search space: trained once per (task data, shape, recipe), then cached."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from canao.cache import cache_dir
from canao.errors import SpaceError
from canao.models.encoder import Encoder, EncoderConfig, predict_logits
from canao.models.hf import load_bert
from canao.models.training import train
from canao.space import SearchSpace, check_space_fits, read_bert_config
from canao.tasks import Split, Task, accuracy, checkpoint_folder, pad_id

log = logging.getLogger(__name__)
_RECIPE_VERSION = 2  # bump when the training code changes what a cached base would be


def encoder_config(space: SearchSpace, task: Task) -> EncoderConfig:
    m = space.base.model
    if m.frontend != task.frontend:
        raise SpaceError(f"space '{space.name}': base frontend '{m.frontend}' does not fit "
                         f"task '{task.name}', which needs '{task.frontend}'")
    extra: dict[str, Any] = {}
    if m.frontend == "patch":
        ch, hh, _ = task.image_shape()
        extra = {"channels": ch, "image_size": hh, "patch_size": m.patch_size}
    else:
        extra = {"vocab_size": m.vocab_size, "max_len": m.max_len, "style": m.style}
        tokenizer = getattr(task, "tokenizer", None)
        if tokenizer is not None:

            if tokenizer.get_vocab_size() > m.vocab_size:
                raise SpaceError(f"space '{space.name}': the tokenizer has "
                                 f"{tokenizer.get_vocab_size()} tokens, more than base.model."
                                 f"vocab_size ({m.vocab_size})")
            extra["pad_id"] = pad_id(tokenizer)
        if m.style == "bert":
            extra["norm_eps"] = 1e-12  # BERT's
        if m.checkpoint:
            cfg = read_bert_config(checkpoint_folder(m.checkpoint))
            check_space_fits(cfg, m, f"space '{space.name}'")
            extra["norm_eps"] = float(cfg.get("layer_norm_eps", 1e-12))
    return EncoderConfig(num_classes=task.num_classes, hidden=m.hidden,
                         heads=(m.heads,) * m.layers, ffn=(m.ffn,) * m.layers,
                         head_dim=m.head_dim, frontend=m.frontend, dropout=m.dropout, **extra)


@functools.cache
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _checkpoint_digest(checkpoint: str) -> str:
    """Content digest of a checkpoint's weights and config (a part of the base's cache key)."""
    if not checkpoint:
        return ""
    folder = checkpoint_folder(checkpoint)
    parts = []
    for name in ("config.json", "model.safetensors"):
        st = (folder / name).stat()
        parts.append(_file_digest(str(folder / name), st.st_size, st.st_mtime_ns))
    return "-".join(parts)


def train_subset(split: Split, max_samples: int, seed: int) -> Split:
    """A seeded subset of ``max_samples`` training examples (all of them when 0 or more)."""
    if not max_samples or max_samples >= len(split):
        return split
    idx = np.sort(np.random.default_rng(seed).permutation(len(split))[:max_samples])
    return Split(split.x[idx], split.y[idx])


def base_key(space: SearchSpace, task: Task) -> str:
    blob = json.dumps({"task": task.name, "data": task.digest(),
                       "config": encoder_config(space, task).to_dict(),
                       "train": asdict(space.base.train), "recipe": _RECIPE_VERSION,
                       "checkpoint": _checkpoint_digest(space.base.model.checkpoint),
                       "torch": torch.__version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_train_base(space: SearchSpace, task: Task) -> tuple[Encoder, dict[str, Any]]:
    """The trained base and its record (key, accuracies); trains and caches it on first use."""
    key = base_key(space, task)
    folder = cache_dir() / "bases" / key
    if (folder / "base.json").is_file():
        info = json.loads((folder / "base.json").read_text())
        model = Encoder(EncoderConfig.from_dict(info["config"]))
        model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
        model.eval()
        return model, info
    t = space.base.train
    log.info("training base %s for task %s (cached afterwards)", key, task.name)
    config = encoder_config(space, task)
    if space.base.model.checkpoint:
        log.info("fine-tuning checkpoint %s on %s", space.base.model.checkpoint, task.name)
        model = load_bert(checkpoint_folder(space.base.model.checkpoint),
                          num_classes=task.num_classes, max_len=config.max_len,
                          pad_id=config.pad_id, seed=t.seed, dropout=config.dropout)
    else:
        torch.manual_seed(t.seed)  # the initial weights; the data order has its own generator
        model = Encoder(config)
    train_split = train_subset(task.split("train"), t.max_samples, t.seed)
    steps = t.epochs * -(-len(train_split) // t.batch_size)
    what = (f"fine-tuning {space.base.model.checkpoint}" if space.base.model.checkpoint
            else f"training the base on {task.name}")
    t0 = time.perf_counter()
    train(model, train_split, steps=steps, batch_size=t.batch_size, lr=t.lr,
          weight_decay=t.weight_decay, seed=t.seed, what=what)
    info = {"key": key, "task": task.name, "config": model.config.to_dict(),
            "parameters": model.num_parameters(), "train_steps": steps,
            "train_samples": len(train_split), "train_s": round(time.perf_counter() - t0, 1)}
    for s in ("validation", "test"):
        part = task.split(s)
        info[f"{s}_accuracy"] = accuracy(predict_logits(model, part.x).numpy(), part.y)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Written to a temporary folder and renamed, so a concurrent or killed run never
    # leaves a half-written base behind.
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}-"))
    torch.save(model.state_dict(), tmp / "model.pt")
    (tmp / "base.json").write_text(json.dumps(info, indent=2))
    try:
        os.rename(tmp, folder)
    except OSError:  # another process finished first; its copy is identical in content
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("base %s: validation accuracy %.4f, test %.4f", key, info["validation_accuracy"],
             info["test_accuracy"])
    return model, info
