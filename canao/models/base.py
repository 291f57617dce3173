"""The base model of a search space: trained once per (task data, shape, recipe), then cached."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from canao.cache import cache_dir
from canao.models.encoder import Encoder, EncoderConfig, predict_logits
from canao.space import SearchSpace
from canao.tasks import Task, accuracy

log = logging.getLogger(__name__)
_RECIPE_VERSION = 1  # bump when the training code changes what a cached base would be


def encoder_config(space: SearchSpace, task: Task) -> EncoderConfig:
    m = space.base.model
    if m.frontend != task.frontend:
        from canao.errors import SpaceError

        raise SpaceError(f"space '{space.name}': base frontend '{m.frontend}' does not fit "
                         f"task '{task.name}', which needs '{task.frontend}'")
    extra: dict[str, Any] = {}
    if m.frontend == "patch":
        ch, hh, _ = task.image_shape()
        extra = {"channels": ch, "image_size": hh, "patch_size": m.patch_size}
    else:
        extra = {"vocab_size": m.vocab_size, "max_len": m.max_len}
    return EncoderConfig(num_classes=task.num_classes, hidden=m.hidden,
                         heads=(m.heads,) * m.layers, ffn=(m.ffn,) * m.layers,
                         head_dim=m.head_dim, frontend=m.frontend, **extra)


def base_key(space: SearchSpace, task: Task) -> str:
    blob = json.dumps({"task": task.name, "data": task.digest(),
                       "config": encoder_config(space, task).to_dict(),
                       "train": asdict(space.base.train), "recipe": _RECIPE_VERSION,
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
    torch.manual_seed(t.seed)  # the initial weights; the data order has its own generator
    model = Encoder(encoder_config(space, task))
    train_split = task.split("train")
    steps = t.epochs * -(-len(train_split) // t.batch_size)
    from canao.compress.training import train

    train(model, train_split, steps=steps, batch_size=t.batch_size, lr=t.lr,
          weight_decay=t.weight_decay, seed=t.seed)
    info = {"key": key, "task": task.name, "config": model.config.to_dict(),
            "parameters": model.num_parameters(), "train_steps": steps}
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
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    log.info("base %s: validation accuracy %.4f, test %.4f", key, info["validation_accuracy"],
             info["test_accuracy"])
    return model, info
