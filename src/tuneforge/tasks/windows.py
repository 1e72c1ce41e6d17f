"""Overlapping windows: an input longer than max_length becomes several rows that share `stride` tokens, so
nothing is cut (token classification, question answering). One fast-tokenizer call per chunk does the split;
every window keeps which example it came from, which word each token belongs to and each token's character
span, so predictions can be merged back per example (evaluate/gather.py).

>>> from tuneforge.tasks.windows import window_spans
>>> window_spans(10, 4, 2)
[(0, 4), (2, 6), (4, 8), (6, 10)]

Windows are cut by the tokenizer (`return_overflowing_tokens=True` with `stride`): `stride` is the number of
tokens two neighbouring windows share, as in transformers' run_qa.py / run_ner.py; a token then appears in
several windows and the merge picks, for each word or answer, the window where it has the most context on
both sides (`best_window`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneforge.errors import ConfigError


def window_spans(n_tokens: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Token ranges [start, end) of the windows over `n_tokens` content tokens, `size` per window, neighbours
    sharing `stride` (the layout the tokenizer's overflow produces; used to reason about and test windows)."""
    if n_tokens <= size:
        return [(0, n_tokens)]
    step = size - stride
    spans, start = [], 0
    while True:
        end = min(start + size, n_tokens)
        spans.append((start, end))
        if end == n_tokens:
            return spans
        start += step


def check_stride(stride: int, room: int, key: str = "data.stride") -> None:
    """`stride` must leave a window room to move: 0 <= stride < room (the content tokens per window)."""
    if stride < 0 or stride >= room:
        raise ConfigError(f"{key}: {stride} tokens of overlap leave no room to move in windows of {room} content "
                          f"tokens; use a value from 0 to {room - 1} (a quarter of the window is usual)")


@dataclass
class Windows:
    """One chunk of windows from the tokenizer, row for row (lists, ready for SplitWriter.add)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    example_ids: list[int]  # the example of each window, numbered across chunks
    word_ids: list[list[int]]  # per token: word index in its example (-1: special token / other sequence)
    char_starts: list[list[int]]  # per token: character span in the windowed text (-1: not in it)
    char_ends: list[list[int]]
    sequence_ids: list[list[int]]  # per token: 0 first text, 1 second text, -1 special


def encode_windows(tokenizer: Any, texts: Sequence[Any], pairs: Sequence[str] | None, max_length: int,
                   stride: int, first_example: int = 0, split_into_words: bool = False) -> Windows:
    """Tokenize `texts` (or texts + `pairs`; the pair is the windowed one, the first text repeats in every
    window, like a QA question before its context) into windows of at most `max_length` tokens that overlap by
    `stride`. `split_into_words`: each text is a list of words (token classification); character spans are
    then within each word. Needs a fast tokenizer (offsets and word ids)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("model.model_name_or_path: windows over long inputs need a fast (Rust) tokenizer, and "
                          f"{type(tokenizer).__name__} is not one; use a checkpoint that ships tokenizer.json")
    enc = tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation="only_second" if pairs
                    is not None else True, max_length=max_length, stride=stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, is_split_into_words=split_into_words)
    samples = enc["overflow_to_sample_mapping"]
    word_ids, starts, ends, seqs = [], [], [], []
    windowed = 1 if pairs is not None else 0  # which sequence carries the character spans
    for i in range(len(enc["input_ids"])):
        seq = [-1 if s is None else s for s in enc.sequence_ids(i)]
        words = enc.word_ids(i)
        word_ids.append([-1 if w is None or s != windowed else w for w, s in zip(words, seq)])
        offsets = enc["offset_mapping"][i]
        starts.append([a if s == windowed else -1 for (a, _), s in zip(offsets, seq)])
        ends.append([b if s == windowed else -1 for (_, b), s in zip(offsets, seq)])
        seqs.append(seq)
    return Windows(enc["input_ids"], enc.get("token_type_ids"), [first_example + int(s) for s in samples],
                   word_ids, starts, ends, seqs)


def iter_windows(tokenizer: Any, texts: Sequence[Any], pairs: Sequence[str] | None, max_length: int, stride: int,
                 chunk: int = 1000, split_into_words: bool = False) -> Iterator[tuple[int, Windows]]:
    """`encode_windows` over `chunk` examples at a time: (first example of the chunk, its windows)."""
    for start in range(0, len(texts), chunk):
        part_pairs = pairs[start:start + chunk] if pairs is not None else None
        yield start, encode_windows(tokenizer, texts[start:start + chunk], part_pairs, max_length, stride,
                                    first_example=start, split_into_words=split_into_words)


def best_window(positions: np.ndarray, window_lengths: np.ndarray) -> int:
    """Of several windows holding one token (its index `positions[k]` in window k of length
    `window_lengths[k]`), the one where it has the most context: the largest min(left, right) distance to the
    window's edges, the first on a tie (the "max context" rule of the original BERT SQuAD code).

    >>> best_window(np.array([6, 2]), np.array([8, 8]))  # 6 of 8 leaves 1 token right; 2 of 8 leaves 2 left
    1
    """
    score = np.minimum(positions, window_lengths - 1 - positions)
    return int(np.argmax(score))
