"""Containers that flow from the data layer to the engine: validated rows, then token arrays.

>>> import numpy as np
>>> from tuneforge.data.prepared import TokenizedSplit
>>> s = TokenizedSplit.from_lists([[101, 7, 102], [101, 102]], labels=[1, 0])
>>> len(s), s.lengths.tolist(), s.row(0).tolist()
(2, [3, 2], [101, 7, 102])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneforge.data.table import DataReport, Table


@dataclass
class PreparedData:
    """Validated, cleaned splits (train always; validation/test when available) plus task facts."""

    splits: dict[str, Table]
    report: DataReport
    label_names: list[str] = field(default_factory=list)  # classification: id -> name
    fingerprint: str = ""  # hash of the cleaned training data, for caching and the run record
    info: dict[str, Any] = field(default_factory=dict)  # task facts found in the data (e.g. causal LM format)


@dataclass
class TokenizedSplit:
    """Ragged token sequences stored flat: row i is input_ids[offsets[i]:offsets[i+1]]."""

    input_ids: np.ndarray  # int32, all rows concatenated
    offsets: np.ndarray  # int64, len(rows) + 1
    token_type_ids: np.ndarray | None = None  # aligned with input_ids (sentence pairs)
    labels: np.ndarray | None = None  # int64, one per row (classification)
    full_lengths: np.ndarray | None = None  # token counts before truncation (for the data report)
    targets: TokenizedSplit | None = None  # seq2seq: the target token rows, aligned with these rows
    token_labels: np.ndarray | None = None  # causal LM: per-token labels aligned with input_ids (-100: no loss)
    doc_offsets: np.ndarray | None = None  # packed causal LM: documents in input_ids; rows are fixed-size blocks
    #                                        of the token stream, labels and positions made per batch (packing.py)
    # Windowed examples (an input longer than max_length split into overlapping windows, `stride` tokens shared:
    # token classification, question answering). Each row is one window; its example is example_ids[row] (None:
    # row i is example i). full_lengths then holds the example's whole token count on each of its windows.
    example_ids: np.ndarray | None = None  # int64 per row
    word_ids: np.ndarray | None = None  # int32 per token: the input word it belongs to, -1 for none (special)
    char_starts: np.ndarray | None = None  # int32 per token: character span in its example's text (-1: none,
    char_ends: np.ndarray | None = None  # e.g. special tokens or a QA question's tokens)
    label_ends: np.ndarray | None = None  # int64 per row: a span's last token beside `labels`, its first (QA)

    def attach_targets(self, targets: TokenizedSplit) -> None:
        assert len(targets) == len(self), "targets must align with sources"
        self.targets = targets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def packed(self) -> bool:
        """Rows are packed blocks of documents (all one length, nothing truncated)."""
        return self.doc_offsets is not None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def batch_lengths(self) -> np.ndarray:
        """What a row costs in a batch: its length, plus its target's for encoder-decoders."""
        return self.lengths + (self.targets.lengths if self.targets is not None else 0)

    @property
    def windowed(self) -> bool:
        """Rows are windows of longer examples (example_ids says which)."""
        return self.example_ids is not None

    @property
    def n_examples(self) -> int:
        """Examples behind the rows (windows of one example count once)."""
        if self.example_ids is None:
            return len(self)
        return int(self.example_ids.max()) + 1 if len(self.example_ids) else 0

    def example_lengths(self) -> np.ndarray:
        """Whole token count per example (before truncation or windowing), in example order.

        >>> s = TokenizedSplit.from_lists([[1, 2], [2, 3], [4]], full_lengths=[3, 3, 1])
        >>> s.example_ids = np.array([0, 0, 1])
        >>> s.n_examples, s.example_lengths().tolist()
        (2, [3, 1])
        """
        lengths = self.full_lengths if self.full_lengths is not None else self.lengths
        if self.example_ids is None:
            return np.asarray(lengths)
        first = np.unique(np.asarray(self.example_ids), return_index=True)[1]  # each example's first window
        return np.asarray(lengths)[first]

    def head(self, n: int) -> TokenizedSplit:
        """The first `n` rows, as views of these arrays (nothing copied)."""
        n = min(n, len(self))
        return dataclasses.replace(
            self, offsets=self.offsets[:n + 1],
            labels=self.labels[:n] if self.labels is not None else None,
            full_lengths=self.full_lengths[:n] if self.full_lengths is not None else None,
            targets=self.targets.head(n) if self.targets is not None else None,
            example_ids=self.example_ids[:n] if self.example_ids is not None else None,
            label_ends=self.label_ends[:n] if self.label_ends is not None else None)

    def row(self, i: int) -> np.ndarray:
        return self.input_ids[self.offsets[i]: self.offsets[i + 1]]

    @classmethod
    def from_lists(cls, ids: list[list[int]], token_type_ids: list[list[int]] | None = None,
                   labels: list[int] | None = None, full_lengths: list[int] | None = None) -> TokenizedSplit:
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in ids], out=offsets[1:])
        flat = np.fromiter((t for r in ids for t in r), dtype=np.int32, count=int(offsets[-1]))
        types = None
        if token_type_ids is not None:
            types = np.fromiter((t for r in token_type_ids for t in r), dtype=np.int8, count=int(offsets[-1]))
        return cls(flat, offsets, types,
                   np.asarray(labels, dtype=np.int64) if labels is not None else None,
                   np.asarray(full_lengths, dtype=np.int64) if full_lengths is not None else None)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"input_ids": self.input_ids, "offsets": self.offsets}
        for name in STORED[2:]:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> TokenizedSplit:
        return cls(**{k: arrays.get(k) for k in STORED})


# the arrays a split is stored as (data/cache.py keeps each as one flat file)
STORED = ("input_ids", "offsets", "token_type_ids", "labels", "full_lengths", "token_labels", "example_ids",
          "word_ids", "char_starts", "char_ends", "label_ends")
