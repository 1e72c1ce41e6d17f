"""Packing documents into fixed-length blocks for causal language modelling, from flat token arrays.

>>> import numpy as np
>>> from tuneforge.data.prepared import TokenizedSplit
>>> from tuneforge.data.packing import pack_documents
>>> docs = TokenizedSplit.from_lists([[5, 6, 2], [7, 2], [8, 9, 10, 2]])   # each ends with EOS (2)
>>> blocks = pack_documents(docs, block_size=4, pad_id=0)
>>> blocks.input_ids.tolist(), blocks.positions.tolist()
([[5, 6, 2, 7], [2, 8, 9, 10], [2, 0, 0, 0]], [[0, 1, 2, 0], [0, 0, 1, 2], [0, 0, 0, 0]])
>>> blocks.labels.tolist()   # first token of a document is not predicted from the previous one; pads ignored
[[5, 6, 2, -100], [2, -100, 9, 10], [2, -100, -100, -100]]

Documents are joined (each already ends with EOS), every token lands in exactly one block, the last block
is padded. `positions` restart at 0 per document so models that separate documents by position ids (GPT-2,
Llama under SDPA/eager when no attention mask is passed) never attend across a boundary. A document cut
by a block boundary restarts at 0 in the next block too: that piece cannot see the previous block anyway,
and continued positions would run past the model's position table for documents longer than it (GPT-2's
1024 learned positions: an out-of-range index, a device-side assert on GPU). Labels are aligned with input_ids (the
loss shifts them), so the EOS that ends a document is a target and the token after it is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuneforge.data.prepared import TokenizedSplit


@dataclass
class PackedBlocks:
    input_ids: np.ndarray  # (n_blocks, block_size) int32
    labels: np.ndarray  # same shape, -100 where no loss
    positions: np.ndarray  # same shape, position within the document

    def __len__(self) -> int:
        return len(self.input_ids)


def pack_documents(docs: TokenizedSplit, block_size: int, pad_id: int) -> PackedBlocks:
    """Pack `docs` (each ending with EOS; `token_labels`, when set, keep their -100s) into blocks."""
    flat = docs.input_ids.astype(np.int64)
    starts = docs.offsets[:-1]
    total = len(flat)
    n_blocks = max(1, -(-total // block_size))
    size = n_blocks * block_size
    ids = np.full(size, pad_id, dtype=np.int64)
    ids[:total] = flat
    labels = np.full(size, -100, dtype=np.int64)
    labels[:total] = docs.token_labels if docs.token_labels is not None else flat  # prompts stay -100
    first = starts[starts > 0]  # a document's first token is not predicted from the one before it
    labels[first] = -100
    # position within the document's piece in this block: index minus the later of the document's start
    # and the block's start, so every position stays below block_size
    doc_of_token = np.repeat(np.arange(len(starts)), np.diff(docs.offsets))
    index = np.arange(total)
    positions = np.zeros(size, dtype=np.int64)
    positions[:total] = index - np.maximum(starts[doc_of_token], index - index % block_size)
    shape = (n_blocks, block_size)
    return PackedBlocks(ids.reshape(shape), labels.reshape(shape), positions.reshape(shape))


def packed_split(docs: TokenizedSplit, block_size: int) -> TokenizedSplit:
    """The blocks `pack_documents` makes, without making them: rows are views into the documents' own token
    stream (memory-mapped when cached), and `packed_batch` builds a batch's labels and positions from the
    document offsets. Costs nothing per token, so a corpus larger than memory packs instantly."""
    n_blocks = max(1, -(-len(docs.input_ids) // block_size))
    return TokenizedSplit(docs.input_ids, np.arange(n_blocks + 1, dtype=np.int64) * block_size,
                          token_labels=docs.token_labels, doc_offsets=docs.offsets)


def packed_batch(split: TokenizedSplit, indices: np.ndarray, pad_id: int) -> tuple[np.ndarray, ...]:
    """(input_ids, labels, position_ids) of blocks `indices` of a `packed_split`, int64, exactly as
    `pack_documents` lays them out (the last block padded with pad_id, labels -100 and positions 0)."""
    width = int(split.offsets[1] - split.offsets[0]) if len(split) else 0
    total = len(split.input_ids)
    index = split.offsets[np.asarray(indices)][:, None] + np.arange(width)[None, :]
    valid = index < total
    safe = np.minimum(index, max(total - 1, 0))
    flat = np.asarray(split.input_ids[safe.ravel()], dtype=np.int64).reshape(index.shape)
    ids = np.where(valid, flat, pad_id)
    targets = flat if split.token_labels is None else \
        np.asarray(split.token_labels[safe.ravel()], dtype=np.int64).reshape(index.shape)  # raw text: the ids
    labels = np.where(valid, targets, -100)
    starts = split.doc_offsets[:-1]
    doc_start = starts[np.searchsorted(starts, safe, side="right") - 1]
    labels[valid & (index == doc_start) & (index > 0)] = -100  # a document's first token: no target
    positions = np.where(valid, index - np.maximum(doc_start, index - index % width), 0)
    return ids, labels, positions
