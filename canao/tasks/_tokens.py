"""Tokenizers of text bases: trained here (WordPiece) or a checkpoint's own; ids from text.

Ids are ``[CLS] text [SEP] [PAD]...``, truncated or padded to the base's ``max_len``. Only
the ``tokenizers`` package is needed (no torch), so ``canao predict --text`` runs with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from canao.errors import TaskError


def encode(tokenizer: Any, texts: list[str] | tuple[str, ...], max_len: int) -> np.ndarray:
    """``[CLS] ... [SEP]`` ids padded with the tokenizer's pad id to ``max_len`` (truncated)."""
    tok = tokenizer
    tok.enable_truncation(max_len)
    tok.enable_padding(length=max_len, pad_id=pad_id(tok), pad_token="[PAD]")
    return np.array([e.ids for e in tok.encode_batch(list(texts))], dtype=np.int64)


def pad_id(tokenizer: Any) -> int:
    pid = tokenizer.token_to_id("[PAD]")
    if pid is None:
        raise TaskError("the tokenizer has no [PAD] token; canao's text models need BERT's "
                        "special tokens ([PAD], [CLS], [SEP], [UNK])")
    return int(pid)


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: tuple[str, ...], vocab_size: int) -> Any:
    """A BERT-style (uncased) WordPiece tokenizer trained on ``texts``; [PAD] is id 0."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                        show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")),
                                                ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


def tokenizer_from_json(text: str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text)


def tokenizer_from_folder(folder: Path) -> Any:
    """A checkpoint folder's tokenizer: ``tokenizer.json``, else BERT's ``vocab.txt``."""
    from tokenizers import Tokenizer

    if (folder / "tokenizer.json").is_file():
        try:
            return Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # tokenizers raises its own Exception type
            raise TaskError(f"{folder / 'tokenizer.json'}: not a tokenizer file: {e}") from None
    if (folder / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        lower = True
        cfg = folder / "tokenizer_config.json"
        if cfg.is_file():
            try:
                lower = bool(json.loads(cfg.read_text()).get("do_lower_case", True))
            except json.JSONDecodeError as e:
                raise TaskError(f"{cfg}: not valid JSON: {e.msg}") from None
        return BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=lower)._tokenizer
    raise TaskError(f"{folder}: no tokenizer.json or vocab.txt; a checkpoint folder needs its "
                    "tokenizer files")
