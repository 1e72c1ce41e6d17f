"""Batch order and padding straight from token arrays: no per-token Python work on the hot path.

>>> import numpy as np
>>> from tuneforge.data.prepared import TokenizedSplit
>>> from tuneforge.data.batching import pad_rows
>>> split = TokenizedSplit.from_lists([[5, 6, 7], [8]])
>>> ids, mask, _ = pad_rows(split, np.array([0, 1]), pad_id=0)
>>> ids.tolist(), mask.tolist()
([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
"""

from __future__ import annotations

import numpy as np

from tuneforge.data.prepared import TokenizedSplit


def row_layout(split: TokenizedSplit, indices: np.ndarray, pad_to_multiple_of: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """(positions into the flat arrays, validity mask) for rows `indices`, right-padded to one width."""
    starts = split.offsets[indices]
    lengths = split.offsets[indices + 1] - starts
    width = int(lengths.max())
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    cols = np.arange(width)
    valid = cols[None, :] < lengths[:, None]
    return np.where(valid, starts[:, None] + cols[None, :], 0), valid


def gather(flat: np.ndarray, layout: tuple[np.ndarray, np.ndarray], fill: int) -> np.ndarray:
    """Any array aligned with input_ids, laid out like the batch, `fill` where padded."""
    positions, valid = layout
    return np.where(valid, flat[positions], fill).astype(np.int64)


def pad_rows(split: TokenizedSplit, indices: np.ndarray, pad_id: int, pad_to_multiple_of: int | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gather rows `indices` into right-padded (ids, attention_mask, token_type_ids) int64 arrays."""
    layout = row_layout(split, indices, pad_to_multiple_of)
    types = gather(split.token_type_ids, layout, 0) if split.token_type_ids is not None else None
    return gather(split.input_ids, layout, pad_id), layout[1].astype(np.int64), types


def batch_count(n_rows: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches batch_order makes of `n_rows`.

    >>> batch_count(10, 4), batch_count(10, 4, drop_last=True), batch_count(3, 4, drop_last=True)
    (3, 2, 1)
    """
    full, ragged = divmod(n_rows, batch_size)
    return full + (1 if ragged and (not drop_last or full == 0) else 0)


def batch_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                strategy: str = "group_by_length", drop_last: bool = False) -> list[np.ndarray]:
    """Indices of each training batch for `epoch`, reproducible from (seed, epoch) alone.

    group_by_length: shuffle, cut into mega-batches of 50 batches, sort each by length (so a batch holds
    similar lengths and little padding), then shuffle the batch order, keeping the batch with the longest
    example first so an out-of-memory error shows up at step one, not hours later.
    drop_last: leave out the one short batch (rows that differ each epoch), unless it is the only batch; a
    compiled model would otherwise recompile for its size.

    >>> [len(b) for b in batch_order(np.ones(10), 4, 0, 0)], [len(b) for b in batch_order(np.ones(10), 4, 0, 0,
    ...                                                                                    drop_last=True)]
    ([4, 4, 2], [4, 4])
    """
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    if strategy == "group_by_length":
        mega = batch_size * 50
        chunks = [perm[i:i + mega] for i in range(0, len(perm), mega)]
        perm = np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in chunks])
    batches = [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    if drop_last and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    if strategy == "group_by_length" and len(batches) > 1:
        longest = int(np.argmax([lengths[b].max() for b in batches]))
        rest = [b for i, b in enumerate(batches) if i != longest]
        order = rng.permutation(len(rest))
        batches = [batches[longest]] + [rest[i] for i in order]
    return batches


def share(batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Process `rank`'s part of one global training batch: contiguous parts whose sizes differ by at most one,
    so the global batch, and with it the data order, is the same whatever the number of processes. A part is
    empty when the batch has fewer rows than processes (the loop then runs a zero-weight step).

    >>> [share(np.arange(5), r, 2).tolist() for r in range(2)], share(np.arange(1), 1, 2).tolist()
    ([[0, 1, 2], [3, 4]], [])
    """
    return np.array_split(batch, world)[rank]


def eval_order(lengths: np.ndarray, batch_size: int, rank: int = 0, world: int = 1) -> list[np.ndarray]:
    """Evaluation batches sorted by length (least padding); metrics never depend on order. With `world`
    processes, process `rank` takes every world-th row of that order: each row is evaluated exactly once, with
    no padding rows, and every process gets rows of every length.

    >>> [b.tolist() for b in eval_order(np.array([1, 5, 3, 4, 2]), 2, rank=1, world=2)]
    [[3, 4]]
    """
    order = np.argsort(-lengths, kind="stable")[rank::world]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def step_micro_batches(step_rows: np.ndarray, micro_rows: int) -> list[np.ndarray]:
    """One optimizer step's rows cut into its micro-batches of `micro_rows` (per-device batch x processes)
    rows, in order; the last may be short.

    >>> [m.tolist() for m in step_micro_batches(np.arange(5), 2)]
    [[0, 1], [2, 3], [4]]
    """
    return [step_rows[i:i + micro_rows] for i in range(0, len(step_rows), micro_rows)]


def layout_for(effective: int, world: int, per_device_max: int) -> tuple[int, int]:
    """(per-device batch, accumulation steps) that give `effective` rows per optimizer step on `world`
    processes with at most `per_device_max` rows per device and forward pass: the largest per-device batch that
    divides each process's share (fewest accumulation steps). None fits when `world` does not divide
    `effective`.

    >>> layout_for(16, 1, 8), layout_for(16, 2, 16), layout_for(24, 2, 8), layout_for(12, 2, 4)
    ((8, 2), (8, 1), (6, 2), (3, 2))
    """
    if effective % world:
        raise ValueError(f"{world} processes cannot share an effective batch of {effective} rows evenly")
    per_process = effective // world
    per_device = max(d for d in range(1, min(per_device_max, per_process) + 1) if per_process % d == 0)
    return per_device, per_process // per_device
