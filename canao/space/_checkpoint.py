"""A Hugging Face BERT checkpoint folder checked against a space, without loading it (no torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from canao.errors import SpaceError
from canao.space._space import ModelSpec
from canao.tasks import tokenizer_from_folder

_NEEDED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
           "vocab_size", "max_position_embeddings")


def read_bert_config(folder: Path) -> dict[str, Any]:
    """The checkpoint's ``config.json``, checked to be a BERT canao can load."""
    path = folder / "config.json"
    if not path.is_file():
        raise SpaceError(f"{folder}: no config.json; a checkpoint folder holds config.json, "
                         "model.safetensors and the tokenizer files")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SpaceError(f"{path}: not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(cfg, dict):
        raise SpaceError(f"{path}: expected a JSON object")
    if cfg.get("model_type") != "bert":
        raise SpaceError(f"{path}: model_type {cfg.get('model_type')!r}; canao loads BERT "
                         "checkpoints (model_type 'bert')")
    missing = [k for k in _NEEDED if not isinstance(cfg.get(k), int)]
    if missing:
        raise SpaceError(f"{path}: missing or not an integer: {', '.join(missing)}")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise SpaceError(f"{path}: hidden_act {cfg['hidden_act']!r}; canao's BERT uses exact "
                         "GELU ('gelu')")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise SpaceError(f"{path}: position_embedding_type {cfg['position_embedding_type']!r}; "
                         "only absolute positions are supported")
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise SpaceError(f"{path}: hidden_size is not a multiple of num_attention_heads")
    return cfg


def check_space_fits(cfg: dict[str, Any], model_spec: ModelSpec, where: str) -> None:
    """The space file's ``base.model`` must describe the checkpoint it names."""
    want = {"hidden": cfg["hidden_size"], "layers": cfg["num_hidden_layers"],
            "heads": cfg["num_attention_heads"], "ffn": cfg["intermediate_size"],
            "head_dim": cfg["hidden_size"] // cfg["num_attention_heads"],
            "vocab_size": cfg["vocab_size"]}
    wrong = [f"{k} {getattr(model_spec, k)} (checkpoint: {v})" for k, v in want.items()
             if getattr(model_spec, k) != v]
    if wrong:
        raise SpaceError(f"{where}: base.model does not describe the checkpoint: {'; '.join(wrong)}")
    if model_spec.max_len > cfg["max_position_embeddings"]:
        raise SpaceError(f"{where}: max_len {model_spec.max_len} exceeds the checkpoint's "
                         f"{cfg['max_position_embeddings']} positions")


def check_checkpoint(folder: Path, model_spec: ModelSpec, where: str) -> None:
    """Everything about a checkpoint folder that can be wrong, checked without loading it:
    its config, that the space describes it, the safetensors header and the tokenizer."""
    cfg = read_bert_config(folder)
    check_space_fits(cfg, model_spec, where)
    path = folder / "model.safetensors"
    if not path.is_file():
        raise SpaceError(f"{folder}: no model.safetensors (canao reads safetensors weights only; "
                         "pytorch_model.bin is a pickle and is not loaded)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            names = {k.removeprefix("bert.") for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise SpaceError(f"{path}: not a readable safetensors file: {e}") from None
    if "embeddings.word_embeddings.weight" not in names:
        raise SpaceError(f"{path}: not a BERT checkpoint (no embeddings.word_embeddings.weight)")
    tokenizer_from_folder(folder)
