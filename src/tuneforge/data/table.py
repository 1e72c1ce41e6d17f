"""In-memory tables of rows with their source locations, so every data error can name file and row.

>>> from tuneforge.data.table import Table
>>> t = Table("train.csv", {"text": ["hi", "yo"], "label": ["a", "b"]}, lines=[2, 3])
>>> t.where(1)
'train.csv, line 3'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneforge.data.columns import ArrowColumn, FileColumn


@dataclass
class Table:
    source: str  # file path, or "hub dataset <id> [split]"
    columns: dict[str, Any]  # name -> list of values, a FileColumn (a .txt file's rows, kept on disk) or an
    #                          ArrowColumn (Parquet / hub text as Arrow buffers)
    lines: Any = None  # 1-based line in the file per row (text formats; a list or an int array); else "row N"
    name: str = ""  # split name when known: train / validation / test

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def loc(self, i: int) -> str:
        return f"line {self.lines[i]}" if self.lines is not None else f"row {i + 1}"

    def where(self, i: int) -> str:
        return f"{self.source}, {self.loc(i)}"

    def select(self, keep: Any) -> Table:
        """The rows `keep` (a list or an integer array), in that order."""
        def pick(values: Any) -> Any:
            if isinstance(values, (FileColumn, ArrowColumn)):
                return values.select(keep)
            if isinstance(values, np.ndarray):
                return values[np.asarray(keep, np.int64)]
            return [values[i] for i in keep]

        return Table(self.source, {k: pick(v) for k, v in self.columns.items()},
                     pick(self.lines) if self.lines is not None else None, self.name)

    def concat_locations(self, indices: list[int], limit: int = 5) -> str:
        shown = ", ".join(self.loc(i) for i in indices[:limit])
        return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


@dataclass
class SplitReport:
    """What happened to one split on its way from file to tensors."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped_empty: int = 0
    dropped_empty_where: str = ""
    dropped_duplicates: int = 0
    held_out: int = 0  # training rows moved to the validation split
    dropped_no_target: int = 0  # rows whose every trainable token was truncated away
    label_counts: dict[str, int] = field(default_factory=dict)
    token_lengths: dict[str, float] = field(default_factory=dict)  # percentiles of untruncated lengths
    truncated_percent: float | None = None
    windowed_percent: float | None = None  # examples longer than max_length, split into windows (nothing cut)
    target_token_lengths: dict[str, float] = field(default_factory=dict)  # seq2seq targets
    target_truncated_percent: float | None = None


@dataclass
class DataReport:
    splits: dict[str, SplitReport] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    max_length: int | None = None
    max_target_length: int | None = None
    length_key: str = "max_length"  # the config key that sets max_length (max_source_length for seq2seq)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def render(self) -> str:
        out = ["Data report"]
        for name, s in self.splits.items():
            out.append(f"  {name}: {s.rows_kept} rows kept of {s.rows_read} read ({s.source})")
            if s.dropped_empty:
                out.append(f"    dropped {s.dropped_empty} rows with empty text ({s.dropped_empty_where})")
            if s.dropped_duplicates:
                out.append(f"    dropped {s.dropped_duplicates} exact duplicate rows")
            if s.dropped_no_target:
                out.append(f"    dropped {s.dropped_no_target} rows with nothing left to learn after truncation at "
                           f"{self.length_key} {self.max_length} (the completion was cut away entirely)")
            if s.held_out:
                out.append(f"    {s.held_out} rows held out for validation")
            if s.label_counts:
                total = sum(s.label_counts.values()) or 1
                dist = ", ".join(f"{k}: {v} ({100 * v / total:.0f}%)" for k, v in s.label_counts.items())
                out.append(f"    labels: {dist}")
            if s.token_lengths:
                pct = ", ".join(f"{k} {v:.0f}" for k, v in s.token_lengths.items())
                if s.windowed_percent is not None:
                    out.append(f"    tokens: {pct}; {s.windowed_percent:.1f}% longer than {self.length_key} "
                               f"{self.max_length}, split into overlapping windows (nothing cut)")
                else:
                    out.append(f"    tokens: {pct}; {s.truncated_percent:.1f}% truncated at {self.length_key} "
                               f"{self.max_length}")
            if s.target_token_lengths:
                pct = ", ".join(f"{k} {v:.0f}" for k, v in s.target_token_lengths.items())
                out.append(f"    target tokens: {pct}; {s.target_truncated_percent:.1f}% truncated at "
                           f"max_target_length {self.max_target_length}")
        out += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(out)
