"""Per-window outputs gathered by example: the windows of one long example land in different batches (sorted
by length), so a task folds each batch's per-row outputs in here and merges them per example at the end.

>>> import numpy as np
>>> from tuneforge.evaluate.gather import ByExample
>>> g = ByExample()
>>> g.add(np.array([2, 0]), np.array([1, 0]), ["c", "a"])   # rows 2 and 0 of the split: examples 1 and 0
>>> g.add(np.array([1]), np.array([0]), ["b"])
>>> [(example, [item for _, item in rows]) for example, rows in g.groups()]
[(0, ['a', 'b']), (1, ['c'])]

Only what the task keeps per row is stored (predicted ids, a few scores), never logits of a whole split.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np


class ByExample:
    """Rows' outputs keyed by their example id; `groups()` yields each example's rows in row order."""

    def __init__(self) -> None:
        self._by_example: dict[int, list[tuple[int, Any]]] = defaultdict(list)

    def add(self, rows: np.ndarray, example_ids: np.ndarray, items: list[Any]) -> None:
        for row, example, item in zip(np.asarray(rows).tolist(), np.asarray(example_ids).tolist(), items):
            self._by_example[example].append((row, item))

    def __len__(self) -> int:
        return len(self._by_example)

    def shard_state(self) -> dict[int, list[tuple[int, Any]]]:
        """What this process gathered (evaluate/shards.py merges the processes' parts)."""
        return dict(self._by_example)

    def merge_shards(self, parts: list[dict[int, list[tuple[int, Any]]]]) -> None:
        """Become the union of every process's part (this one's included): windows of one example evaluated
        on different processes meet again."""
        self._by_example = defaultdict(list)
        for part in parts:
            for example, rows in part.items():
                self._by_example[example].extend(rows)

    def groups(self) -> Iterator[tuple[int, list[tuple[int, Any]]]]:
        """(example id, [(row, item), ...] in row order), in example order."""
        for example in sorted(self._by_example):
            yield example, sorted(self._by_example[example], key=lambda pair: pair[0])
