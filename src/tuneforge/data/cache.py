"""Tokenized-data cache: one folder of flat binary arrays per (data, tokenizer, settings) fingerprint, read back
as read-only memory maps, so a split larger than memory costs only the pages a batch touches.

>>> from tuneforge.data.cache import cache_key
>>> len(cache_key({"data": "abc", "max_length": 128}))
24

An entry is `<key>/` holding `<array>.bin` files (raw little-endian values) and `meta.json` (dtype and length
of each; written last, so an entry without it is incomplete and rebuilt). Builders write chunk by chunk
through `SplitWriter`, never holding a whole split as Python lists. A folder is built under a temporary name
and renamed into place, so two processes building the same entry cannot see a half-written one. Entries of
the old single-file format (`<key>.npz`, which could not be memory-mapped) are never read; those older than a
day are deleted when a new entry is written.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.data.prepared import TokenizedSplit

FORMAT = 2  # part of every key: entries of another layout are never read
# per-row arrays (aligned with offsets[1:]) and per-token arrays (aligned with input_ids) besides those two
ROW_ARRAYS = {"labels": np.int64, "full_lengths": np.int32, "example_ids": np.int64, "label_ends": np.int64}
TOKEN_ARRAYS = {"token_type_ids": np.int8, "token_labels": np.int32, "word_ids": np.int32, "char_starts": np.int32,
                "char_ends": np.int32}
ARRAYS = {"input_ids": np.int32, "offsets": np.int64, **ROW_ARRAYS, **TOKEN_ARRAYS}


def cache_root(configured: str | None) -> Path:
    base = configured or os.environ.get("TUNEFORGE_CACHE") or Path.home() / ".cache" / "tuneforge"
    return Path(base) / "tokenized"


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({**parts, "format": FORMAT}, sort_keys=True, default=str).encode()
                          ).hexdigest()[:24]


class SplitWriter:
    """Appends tokenized rows chunk by chunk to flat files in `folder` (then `finish()` writes meta.json), or,
    with no folder, to arrays in memory (then `finish()` returns the TokenizedSplit: predict, small inputs)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.files: dict[str, Any] = {}  # name -> open file, or list of arrays in memory
        self.lengths: dict[str, int] = {}
        self.total = 0  # tokens written
        self._write("offsets", np.zeros(1, dtype=np.int64))

    def _write(self, name: str, values: Any) -> None:
        array = np.ascontiguousarray(values, dtype=ARRAYS[name])
        if name not in self.files:
            self.files[name] = open(self.folder / f"{name}.bin", "wb") if self.folder is not None else []
            self.lengths[name] = 0
        if self.folder is None:
            self.files[name].append(array)
        else:
            self.files[name].write(array.tobytes())
        self.lengths[name] += len(array)

    def add(self, rows: Sequence[Sequence[int]], **aligned: Any) -> None:
        """One chunk of rows (lists of token ids) and what goes with them, aligned row for row: per-row values
        (labels, full_lengths, example_ids, label_ends: one per row) and per-token ones (token_type_ids,
        token_labels, word_ids, char_starts, char_ends: a sequence per row, as long as the row). None is skipped;
        an array must be given for every chunk or for none."""
        sizes = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        count = int(sizes.sum())
        self._write("input_ids", np.fromiter(chain.from_iterable(rows), dtype=np.int32, count=count))
        self._write("offsets", self.total + np.cumsum(sizes))
        self.total += count
        for name, values in aligned.items():
            if values is None:
                continue
            if name in TOKEN_ARRAYS:
                self._write(name, np.fromiter(chain.from_iterable(values), TOKEN_ARRAYS[name], count=count))
            elif name in ROW_ARRAYS:
                if len(values) != len(rows):
                    raise ValueError(f"{name}: {len(values)} values for {len(rows)} rows")
                self._write(name, values)
            else:
                raise TypeError(f"SplitWriter.add: unknown array {name!r}; known: {sorted(ARRAYS)}")

    def finish(self) -> TokenizedSplit | None:
        if self.folder is None:
            return TokenizedSplit.from_arrays({k: np.concatenate(v) for k, v in self.files.items()})
        for fh in self.files.values():
            fh.close()
        meta = {name: {"dtype": np.dtype(ARRAYS[name]).str, "length": n} for name, n in self.lengths.items()}
        (self.folder / "meta.json").write_text(json.dumps(meta))
        return None


def tokenize_in_memory(build: Callable[[SplitWriter], None]) -> TokenizedSplit:
    """What `build` writes, as arrays in memory (no cache entry): for inputs as small as a predict call."""
    writer = SplitWriter()
    build(writer)
    split = writer.finish()
    assert split is not None
    return split


def open_entry(folder: Path) -> TokenizedSplit:
    """The arrays of a finished entry, memory-mapped read-only (an empty array is read as an empty array)."""
    meta = json.loads((folder / "meta.json").read_text())
    arrays = {}
    for name, info in meta.items():
        dtype, n = np.dtype(info["dtype"]), info["length"]
        path = folder / f"{name}.bin"
        if path.stat().st_size != n * dtype.itemsize:
            raise ValueError(f"{path}: size does not match meta.json")
        arrays[name] = np.memmap(path, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype=dtype)
    return TokenizedSplit.from_arrays(arrays)


def _scratch() -> Path:
    """A folder for entries when the cache cannot be written (read-only or full): removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="tuneforge-tokens-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _drop_old_format(root: Path) -> None:
    cutoff = time.time() - 86400
    for old in root.glob("*.npz"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass


def cached_tokenize(root: Path, parts: dict[str, Any], build: Callable[[SplitWriter], None]) -> TokenizedSplit:
    """The cached arrays for `parts`; on a miss `build(writer)` writes them (atomically) first."""
    final = root / cache_key(parts)
    if (final / "meta.json").is_file():
        try:
            return open_entry(final)
        except (OSError, ValueError, KeyError):
            shutil.rmtree(final, ignore_errors=True)  # corrupt entry: rebuild
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}-"))
    except OSError:
        tmp = Path(tempfile.mkdtemp(dir=_scratch()))
    try:
        writer = SplitWriter(tmp)
        build(writer)
        writer.finish()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, final)
        _drop_old_format(root)
    except OSError:  # another process finished the same entry first (or the cache is read-only)
        if not (final / "meta.json").is_file():
            return open_entry(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    return open_entry(final)
