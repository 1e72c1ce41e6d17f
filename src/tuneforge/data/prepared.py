"""Containers that flow from the data layer to the engine: validated rows, then token arrays.

>>> import numpy as np
>>> from tuneforge.data.prepared import TokenizedSplit
>>> s = TokenizedSplit.from_lists([[101, 7, 102], [101, 102]], labels=[1, 0])
>>> len(s), s.lengths.tolist(), s.row(0).tolist()
(2, [3, 2], [101, 7, 102])
"""

from __future__ import annotations

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

    def head(self, n: int) -> TokenizedSplit:
        """The first `n` rows, as views of these arrays (nothing copied)."""
        n = min(n, len(self))
        return TokenizedSplit(self.input_ids, self.offsets[:n + 1], self.token_type_ids,
                              self.labels[:n] if self.labels is not None else None,
                              self.full_lengths[:n] if self.full_lengths is not None else None,
                              self.targets.head(n) if self.targets is not None else None,
                              self.token_labels, self.doc_offsets)

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
        for name in ("token_type_ids", "labels", "full_lengths", "token_labels"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> TokenizedSplit:
        return cls(**{k: arrays.get(k) for k in ("input_ids", "offsets", "token_type_ids", "labels",
                                                  "full_lengths", "token_labels")})
