"""Evaluation states of several processes merged into one, whatever the task: each process folds its share of
the batches into the state its task's `init_eval_state` made, and the merged state is what one process folding
every batch would hold, so the task's `eval_metrics` runs on it unchanged.

>>> from tuneforge.evaluate.shards import increments, merge, snapshot
>>> states = [{"n_best": 20, "loss_sum": 0.0}, {"n_best": 20, "loss_sum": 0.0}]   # init_eval_state, twice
>>> bases = [snapshot(s) for s in states]
>>> states[0] |= {"loss_sum": 1.5, "pred": [[1, 0]]}; states[1] |= {"loss_sum": 0.5, "pred": [[1]], "tune": True}
>>> parts = [increments(s, b) for s, b in zip(states, bases)]
>>> merged = merge(states[0], bases[0], parts)
>>> merged["n_best"], merged["loss_sum"], merged["pred"], merged["tune"]
(20, 2.0, [[1, 0], [1]], True)

What a state holds is a fold, so the merge is the initial state plus every process's increments, by type:
numbers and numeric arrays add their increments; lists concatenate what each process appended (in rank
order); a flag is set when any process set it; a string or None takes the first value a process changed it
to; an object with `shard_state()` / `merge_shards(parts)` (ByExample, ErrorCollector, RougeAccumulator)
merges itself. Everything else (the model, the config, a generator) is the same on every process and stays.
The merge is computed alike on every process (same parts, same order), so every process takes the same
decisions from the metrics (best model, early stopping). Pure code: the exchange is the engine's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_ABSENT = object()


def _mergeable(value: Any) -> bool:
    return hasattr(value, "shard_state") and hasattr(value, "merge_shards")


def snapshot(state: dict[str, Any]) -> dict[str, Any]:
    """What the fold started from: numbers, arrays, flags and strings by value, lists by length."""
    base: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, list):
            base[key] = len(value)
        elif isinstance(value, np.ndarray):
            base[key] = value.copy()
        elif value is None or isinstance(value, (bool, int, float, str)):
            base[key] = value
    return base


def increments(state: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """This process's part of the merge (picklable): what eval_step added to each mergeable entry."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        start = base.get(key, _ABSENT)
        if _mergeable(value):
            out[key] = ("object", value.shard_state())
        elif isinstance(value, list):
            out[key] = ("list", value[start if start is not _ABSENT else 0:])
        elif isinstance(value, bool) or value is None or isinstance(value, str):
            if start is _ABSENT or value != start:
                out[key] = ("value", value)
        elif isinstance(value, (int, float, np.ndarray)):
            out[key] = ("sum", value - start if start is not _ABSENT else value)
    return out


def merge(state: dict[str, Any], base: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The state one process folding every batch would hold, from this process's `state` and `base` and every
    process's `increments` (in rank order, this one's included)."""
    merged = dict(state)
    for key in dict.fromkeys(k for part in parts for k in part):
        entries = [part[key] for part in parts if key in part]
        kind = entries[0][0]
        values = [value for _, value in entries]
        start = base.get(key, _ABSENT)
        if kind == "object":
            merged[key].merge_shards(values) if key in merged else None
        elif kind == "list":
            merged[key] = ([] if start is _ABSENT else list(state[key][:start])) + [x for v in values for x in v]
        elif kind == "value":
            if all(isinstance(v, bool) for v in values):
                merged[key] = any(values) or (False if start is _ABSENT else start)
            else:
                merged[key] = values[0]
        else:  # "sum": the initial value plus every increment
            total: Any = 0 if start is _ABSENT else start
            for value in values:
                total = total + value
            merged[key] = total
    return merged
