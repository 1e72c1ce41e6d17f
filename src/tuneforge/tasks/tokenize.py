"""Batch tokenization into flat arrays, with untruncated lengths kept for the data report.

>>> split = cached_tokenize(root, parts, partial(tokenize_texts, tokenizer, ["a text", "another"], None, 128))
...                                                                                      # doctest: +SKIP
>>> split.lengths, split.full_lengths                                                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

import numpy as np

from tuneforge.data.prepared import TokenizedSplit


def chunks(values: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of `size` values (a FileColumn iterates its file in sorted reads)."""
    it = iter(values)
    while batch := list(islice(it, size)):
        yield batch


def progress(rows: int, what: str) -> Any:
    """A progress bar on stderr for big inputs (none under 20,000 rows: small runs print nothing)."""
    from tqdm.auto import tqdm

    return tqdm(total=rows, unit=" rows", desc=what, disable=rows < 20_000, mininterval=2.0, leave=False)


def tokenize_texts(tokenizer: Any, texts: Sequence[str] | Iterable[str], pairs: Iterable[str] | None,
                   max_length: int, writer: Any, target: bool = False, chunk: int = 2048) -> None:
    """Tokenize chunk by chunk into `writer` (data/cache.py SplitWriter): each chunk once without truncation
    (to record full lengths), then only its rows over `max_length` again with the tokenizer's own truncation
    (it knows where special tokens go). A fast tokenizer encodes each chunk on all cores (Rust threads).
    `target=True` tokenizes decoder targets (`text_target=`), which some tokenizers treat differently."""
    from transformers.utils import logging as hf_logging

    if target:
        def call(a: list[str], b: Any, **kw: Any) -> Any:
            return tokenizer(text_target=a, **kw)
    else:
        call = tokenizer
    want_types = pairs is not None and "token_type_ids" in tokenizer.model_input_names
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "sequence longer than the maximum" is expected here
    total = len(texts) if isinstance(texts, Sequence) else 0
    bar = progress(total, "tokenizing")
    pair_chunks = chunks(pairs, chunk) if pairs is not None else None
    try:
        for a in chunks(texts, chunk):
            b = next(pair_chunks) if pair_chunks is not None else None
            enc = call(a, b, truncation=False, return_attention_mask=False, return_token_type_ids=want_types)
            ids = enc["input_ids"]
            types = enc["token_type_ids"] if want_types else None
            full = [len(r) for r in ids]
            long_rows = [i for i, n in enumerate(full) if n > max_length]
            if long_rows:
                cut = call([a[i] for i in long_rows], [b[i] for i in long_rows] if b is not None else None,
                           truncation=True, max_length=max_length, return_attention_mask=False,
                           return_token_type_ids=want_types)
                for j, i in enumerate(long_rows):
                    ids[i] = cut["input_ids"][j]
                    if want_types:
                        types[i] = cut["token_type_ids"][j]
            writer.add(ids, token_type_ids=types, full_lengths=full)
            bar.update(len(a))
    finally:
        bar.close()
        hf_logging.set_verbosity(verbosity)


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
