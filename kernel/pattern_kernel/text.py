"""Tokenising text for the sentence encoder with the `tokenizers` library."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from pattern_kernel.errors import InputError


def load_tokenizer(
    path: str, max_length: int | None = None, pad_to_multiple_of: int | None = None
) -> Tokenizer:
    """A tokenizer from `tokenizer.json`; truncation and padding as the file says unless given
    (the exported file truncates at the encoder's max_seq_length and pads to the longest)."""
    tokenizer = Tokenizer.from_file(str(path))
    if max_length:
        tokenizer.enable_truncation(max_length=max_length)
    if pad_to_multiple_of:
        padding = tokenizer.padding or {}
        tokenizer.enable_padding(
            pad_id=padding.get("pad_id", 0),
            pad_token=padding.get("pad_token", "[PAD]"),
            pad_to_multiple_of=pad_to_multiple_of,
        )
    return tokenizer


def decode_texts(name: str, values: np.ndarray) -> list[str]:
    """BYTES tensor rows as text; empty or non-UTF-8 rows are an InputError naming the row."""
    texts = []
    for i, value in enumerate(values.reshape(-1)):
        raw = value if isinstance(value, bytes) else str(value).encode()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(name, f"row {i} is not valid UTF-8 text") from None
        if not text.strip():
            raise InputError(name, f"row {i} is empty; expected non-empty text")
        texts.append(text)
    return texts


def tokenize(tokenizer: Tokenizer, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """input_ids and attention_mask [len(texts), longest] as int64, padded to the longest."""
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }
