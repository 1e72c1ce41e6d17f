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
    """Drop rows whose text (any of `text_columns`) is empty or null; return kept table and dropped rows."""
    dropped = [i for i in range(len(table)) if any(is_blank(table.columns[c][i]) for c in text_columns)]
    if not dropped:
        return table, []
    gone = set(dropped)
    return table.select([i for i in range(len(table)) if i not in gone]), dropped


def check_text_types(table: Table, text_columns: list[str]) -> None:
    for column in text_columns:
        for i, value in enumerate(table.columns[column]):
            if not isinstance(value, str):
                raise DataError(f"{table.where(i)}: column {column!r} holds {type(value).__name__} "
                                f"{str(value)[:40]!r}, expected text")


def row_keys(table: Table, columns: list[str]) -> list[tuple]:
    return list(zip(*(table.columns[c] for c in columns)))


def drop_duplicates(table: Table, columns: list[str]) -> tuple[Table, int]:
    """Drop exact duplicates over `columns`, keeping the first occurrence."""
    seen: set[tuple] = set()
    keep = []
    for i, key in enumerate(row_keys(table, columns)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return (table.select(keep) if len(keep) < len(table) else table), len(table) - len(keep)


def conflicting_labels(table: Table, text_columns: list[str], label_column: str) -> str | None:
    """Warning text when identical inputs carry different labels, else None."""
    labels_by_text: dict[tuple, set] = defaultdict(set)
    first: dict[tuple, int] = {}
    for i, (key, label) in enumerate(zip(row_keys(table, text_columns), table.columns[label_column])):
        labels_by_text[key].add(label)
        first.setdefault(key, i)
    conflicts = [k for k, v in labels_by_text.items() if len(v) > 1]
    if not conflicts:
        return None
    example = conflicts[0]
    return (f"{len(conflicts)} texts in {table.source} appear with different labels, e.g. "
            f"{str(example[0])[:60]!r} ({table.loc(first[example])}) labelled "
            f"{', '.join(map(str, sorted(labels_by_text[example], key=str)))}")


def overlap_warning(train: Table, other: Table, text_columns: list[str]) -> str | None:
    train_keys = set(row_keys(train, text_columns))
    hits = [i for i, k in enumerate(row_keys(other, text_columns)) if k in train_keys]
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
    """A short hash of `columns` of every table (the data a run or a cache entry depends on)."""
    h = hashlib.sha256(json.dumps(columns).encode())
    for table in tables:
        for name in columns:
            h.update(name.encode())
            h.update(json.dumps(table.columns[name], default=str, ensure_ascii=False).encode())
    return h.hexdigest()[:16]
