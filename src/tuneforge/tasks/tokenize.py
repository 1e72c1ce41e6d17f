"""Batch tokenization into flat arrays, with untruncated lengths kept for the data report.

>>> split = tokenize_texts(tokenizer, ["a short text", "another"], None, max_length=128)  # doctest: +SKIP
>>> split.lengths, split.full_lengths                                                     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tuneforge.data.prepared import TokenizedSplit


def tokenize_texts(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int,
                   target: bool = False, chunk: int = 4096) -> TokenizedSplit:
    """Tokenize in one pass without truncation (to record full lengths), then re-tokenize only the rows
    that exceed `max_length` with the tokenizer's own truncation (it knows where special tokens go).
    `target=True` tokenizes decoder targets (`text_target=`), which some tokenizers treat differently."""
    from transformers.utils import logging as hf_logging

    if target:
        def call(a: list[str], b: Any, **kw: Any) -> Any:
            return tokenizer(text_target=a, **kw)
    else:
        call = tokenizer
    want_types = pairs is not None and "token_type_ids" in tokenizer.model_input_names
    ids: list[list[int]] = []
    types: list[list[int]] = []
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "sequence longer than the maximum" is expected here
    try:
        for start in range(0, len(texts), chunk):
            a = texts[start:start + chunk]
            b = pairs[start:start + chunk] if pairs is not None else None
            enc = call(a, b, truncation=False, return_attention_mask=False, return_token_type_ids=want_types)
            ids += enc["input_ids"]
            if want_types:
                types += enc["token_type_ids"]
    finally:
        hf_logging.set_verbosity(verbosity)
    full = [len(r) for r in ids]
    long_rows = [i for i, n in enumerate(full) if n > max_length]
    if long_rows:
        enc = call([texts[i] for i in long_rows], [pairs[i] for i in long_rows] if pairs else None,
                   truncation=True, max_length=max_length, return_attention_mask=False,
                   return_token_type_ids=want_types)
        for j, i in enumerate(long_rows):
            ids[i] = enc["input_ids"][j]
            if want_types:
                types[i] = enc["token_type_ids"][j]
    return TokenizedSplit.from_lists(ids, types if want_types else None, None, full)


def length_stats(split: TokenizedSplit, max_length: int) -> tuple[dict[str, float], float]:
    """Percentiles of the untruncated token lengths and the percent of rows truncated at max_length."""
    full = split.full_lengths if split.full_lengths is not None else split.lengths
    if len(full) == 0:
        return {}, 0.0
    pct = {f"p{q}": float(np.percentile(full, q)) for q in (50, 90, 95, 99)}
    pct["max"] = float(full.max())
    return pct, float(100.0 * np.mean(full > max_length))


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides token ids: the full tokenizer definition and its settings."""
    import hashlib

    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(tokenizer)
    extra = f"{tokenizer.__class__.__name__}|{tokenizer.padding_side}|{tokenizer.truncation_side}"
    return hashlib.sha256((text + extra).encode()).hexdigest()[:16]
