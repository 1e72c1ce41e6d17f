"""Tokenized-data cache: arrays in one .npz per (data, tokenizer, settings) fingerprint.

>>> from tuneforge.data.cache import cache_key
>>> len(cache_key({"data": "abc", "max_length": 128}))
24
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.data.prepared import TokenizedSplit


def cache_root(configured: str | None) -> Path:
    base = configured or os.environ.get("TUNEFORGE_CACHE") or Path.home() / ".cache" / "tuneforge"
    return Path(base) / "tokenized"


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached_tokenize(root: Path, parts: dict[str, Any], build: Callable[[], TokenizedSplit]) -> TokenizedSplit:
    """Return the cached arrays for `parts`, building and storing them (atomically) on a miss."""
    path = root / f"{cache_key(parts)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return TokenizedSplit.from_arrays(dict(arrays))
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # corrupt entry: rebuild
    split = build()
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".tmp.npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **split.arrays())
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full cache only costs speed
    return split
