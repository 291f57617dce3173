"""Hugging Face BERT checkpoints (``config.json`` + ``model.safetensors``) as canao encoders.

The checkpoint's tensors are mapped onto a ``style: bert`` :class:`Encoder`: BERT's word
embeddings, its position embeddings plus token-type 0 (one summed table, since canao feeds
single-segment inputs), the embedding LayerNorm, each layer's attention and FFN, the pooler
and, when the checkpoint is a ``BertForSequenceClassification`` with the task's number of
labels, the classifier. A checkpoint without a pooler or classifier (a sentence-embedding
model such as all-MiniLM-L6-v2) gets them freshly initialised from the seed. The result
computes what ``transformers``' ``BertForSequenceClassification`` computes on the same ids
with ``attention_mask = ids != pad_id``; transformers itself is not needed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from canao.errors import SpaceError
from canao.models.encoder import Encoder, EncoderConfig
from canao.space import read_bert_config


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / "model.safetensors"
    if not path.is_file():
        raise SpaceError(f"{folder}: no model.safetensors (canao reads safetensors weights only; "
                         "pytorch_model.bin is a pickle and is not loaded)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise SpaceError(f"{path}: not a readable safetensors file: {e}") from None
    # BertModel checkpoints name tensors "embeddings...", classification ones "bert.embeddings...".
    return {k.removeprefix("bert."): v.float() for k, v in tensors.items()}


def load_bert(folder: Path, *, num_classes: int, max_len: int, pad_id: int,
              seed: int = 0, dropout: float = 0.0) -> Encoder:
    """A ``style: bert`` encoder holding the checkpoint's weights (see the module docstring)."""
    cfg = read_bert_config(folder)
    t = _read_tensors(folder)
    heads = cfg["num_attention_heads"]
    config = EncoderConfig(num_classes=num_classes, hidden=cfg["hidden_size"],
                           heads=(heads,) * cfg["num_hidden_layers"],
                           ffn=(cfg["intermediate_size"],) * cfg["num_hidden_layers"],
                           head_dim=cfg["hidden_size"] // heads, frontend="token",
                           vocab_size=cfg["vocab_size"], max_len=max_len,
                           norm_eps=float(cfg.get("layer_norm_eps", 1e-12)), style="bert",
                           pad_id=pad_id, dropout=dropout)
    torch.manual_seed(seed)  # the parts a checkpoint may lack: pooler, classifier
    model = Encoder(config)
    found: dict[str, torch.Tensor | None] = {
        "embed.weight": t.get("embeddings.word_embeddings.weight"),
        "emb_norm.weight": t.get("embeddings.LayerNorm.weight"),
        "emb_norm.bias": t.get("embeddings.LayerNorm.bias"),
    }
    pos, typ = t.get("embeddings.position_embeddings.weight"), \
        t.get("embeddings.token_type_embeddings.weight")
    if pos is not None and typ is not None:
        found["pos"] = (pos[:max_len] + typ[0])[None]
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for ours, theirs in (("attn.q", "attention.self.query"), ("attn.k", "attention.self.key"),
                             ("attn.v", "attention.self.value"),
                             ("attn.o", "attention.output.dense"),
                             ("ln1", "attention.output.LayerNorm"),
                             ("fc1", "intermediate.dense"), ("fc2", "output.dense"),
                             ("ln2", "output.LayerNorm")):
            for part in ("weight", "bias"):
                found[f"blocks.{i}.{ours}.{part}"] = t.get(f"{p}{theirs}.{part}")
    missing = sorted(k for k, v in found.items() if v is None)
    if missing:
        raise SpaceError(f"{folder / 'model.safetensors'}: not a BERT checkpoint, missing "
                         f"{len(missing)} tensors such as {missing[0]}")
    state = {k: v for k, v in found.items() if v is not None}  # all of them, by now
    optional = {"pooler.weight": "pooler.dense.weight", "pooler.bias": "pooler.dense.bias"}
    if t.get("classifier.weight") is not None and t["classifier.weight"].shape[0] == num_classes:
        optional.update({"head.weight": "classifier.weight", "head.bias": "classifier.bias"})
    state.update({ours: t[theirs] for ours, theirs in optional.items() if theirs in t})
    own = model.state_dict()
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise SpaceError(f"{folder / 'model.safetensors'}: tensor for {k} has shape "
                             f"{tuple(v.shape)}, config.json implies {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=False)
    return model.eval()
