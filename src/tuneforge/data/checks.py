"""Task-independent checks and clean-up of Tables: columns, empty text, duplicates, overlap, splits.

>>> from tuneforge.data.table import Table
>>> from tuneforge.data.checks import drop_empty_text
>>> t = Table("a.csv", {"text": ["hi", " ", None]}, lines=[2, 3, 4])
>>> kept, dropped = drop_empty_text(t, ["text"])
>>> len(kept), dropped
(1, [1, 2])
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import random
from collections import defaultdict
from typing import Any

import numpy as np

from tuneforge.data.columns import FileColumn, text_digests
from tuneforge.data.table import Table
from tuneforge.errors import DataError


def require_columns(table: Table, wanted: dict[str, str | None]) -> None:
    """`wanted` maps config key (e.g. data.text_column) to a column name; None means not used."""
    have = list(table.columns)
    for key, column in wanted.items():
        if column is None or column in table.columns:
            continue
        close = difflib.get_close_matches(column, have, n=1)
        hint = f"; set {key}={close[0]}" if close else f"; set {key} to one of them"
        raise DataError(f"{table.source}: no column {column!r} ({key}); columns are: "
                        f"{', '.join(have)}{hint}")


def is_blank(value: Any) -> bool:
    """None, NaN (pandas/parquet nulls) or whitespace-only text."""
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


def drop_empty_text(table: Table, text_columns: list[str]) -> tuple[Table, list[int]]:
    """Drop rows whose text (any of `text_columns`) is empty or null; return kept table and dropped rows.
    A FileColumn is not read here beyond the rows its scan marked irregular."""
    columns = [table.columns[c] for c in text_columns if not isinstance(table.columns[c], FileColumn)]
    # iterated, not indexed: an ArrowColumn reads in batches
    dropped = {i for i, values in enumerate(zip(*columns)) if any(map(is_blank, values))} if columns else set()
    for name in text_columns:  # a FileColumn knows the only rows that can be blank
        values = table.columns[name]
        if isinstance(values, FileColumn):
            dropped.update(int(i) for i in values.irregular if is_blank(values[int(i)]))
    dropped = sorted(dropped)
    if not dropped:
        return table, []
    gone = set(dropped)
    return table.select([i for i in range(len(table)) if i not in gone]), dropped


def check_text_types(table: Table, text_columns: list[str]) -> None:
    for column in text_columns:
        values = table.columns[column]
        rows = ((int(i), values[int(i)]) for i in values.irregular) if isinstance(values, FileColumn) \
            else enumerate(values)  # a FileColumn's other rows are text by construction
        for i, value in rows:
            if not isinstance(value, str):
                raise DataError(f"{table.where(i)}: column {column!r} holds {type(value).__name__} "
                                f"{str(value)[:40]!r}, expected text")


def row_digests(table: Table, columns: list[str]) -> np.ndarray:
    """One uint64 per row standing for the values of `columns` (data/columns.py digests, combined): every
    global check compares these, never the texts, so it costs 8 bytes a row whatever the text length."""
    out = text_digests(table.columns[columns[0]]).copy()
    with np.errstate(over="ignore"):
        for name in columns[1:]:
            d = text_digests(table.columns[name])
            out ^= d + np.uint64(0x9E3779B97F4A7C15) + (out << np.uint64(6)) + (out >> np.uint64(2))
    return out


def drop_duplicates(table: Table, columns: list[str]) -> tuple[Table, int]:
    """Drop exact duplicates over `columns`, keeping the first occurrence."""
    _, first = np.unique(row_digests(table, columns), return_index=True)
    if len(first) == len(table):
        return table, 0
    return table.select(np.sort(first)), len(table) - len(first)


def conflicting_labels(table: Table, text_columns: list[str], label_column: str) -> str | None:
    """Warning text when identical inputs carry different labels, else None."""
    texts = row_digests(table, text_columns)
    labels = text_digests(table.columns[label_column])
    order = np.lexsort((labels, texts))
    t, lab = texts[order], labels[order]
    clash = (t[1:] == t[:-1]) & (lab[1:] != lab[:-1])
    if not clash.any():
        return None
    conflicted = np.unique(t[1:][clash])
    rows = np.flatnonzero(np.isin(texts, conflicted))
    first = int(rows[0])  # the conflicting text seen first in the file
    same = rows[texts[rows] == texts[first]]
    values = table.columns[label_column]
    example = table.columns[text_columns[0]][first]
    names = sorted({values[int(i)] for i in same}, key=str)
    return (f"{len(conflicted)} texts in {table.source} appear with different labels, e.g. "
            f"{str(example)[:60]!r} ({table.loc(first)}) labelled {', '.join(map(str, names))}")


def overlap_warning(train: Table, other: Table, text_columns: list[str]) -> str | None:
    hits = np.flatnonzero(np.isin(row_digests(other, text_columns), row_digests(train, text_columns))).tolist()
    if not hits:
        return None
    return (f"{len(hits)} of {len(other)} {other.name or 'evaluation'} rows also appear in training "
            f"({other.source}: {other.concat_locations(hits, 3)}); evaluation scores will be optimistic")


def stratified_split(labels: list[Any], percent: float, seed: int) -> tuple[list[int], list[int], list[str]]:
    """Return (train indices, validation indices, warnings). Classes under 2 rows stay in training."""
    by_class: dict[Any, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    rng = random.Random(seed)
    train, val, warnings = [], [], []
    for label in sorted(by_class, key=str):
        idx = by_class[label][:]
        if len(idx) < 2:
            warnings.append(f"class {label!r} has {len(idx)} example; too few to stratify, kept in training "
                            "only (it will not be validated)")
            train += idx
            continue
        rng.shuffle(idx)
        n_val = min(len(idx) - 1, max(1, round(len(idx) * percent / 100)))
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val), warnings


def fingerprint(tables: list[Table], columns: list[str]) -> str:
    """A short hash of `columns` of every table (the data a run or a cache entry depends on), from the row
    digests: the same rows in the same order give the same fingerprint, whether on disk or in memory."""
    h = hashlib.sha256(json.dumps(columns).encode())
    for table in tables:
        for name in columns:
            h.update(name.encode())
            h.update(text_digests(table.columns[name]).tobytes())
    return h.hexdigest()[:16]
