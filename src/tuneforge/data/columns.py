"""Columns that stay on disk: a text file's rows as byte spans, with one 64-bit digest per row.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "corpus.txt"
>>> _ = path.write_text("first line\\n\\nsecond line\\r\\nthird\\n")
>>> column, lines = scan_text_file(path, "line")
>>> len(column), column[1], list(column), lines.tolist()
(3, 'second line', ['first line', 'second line', 'third'], [1, 3, 4])
>>> docs, starts = scan_text_file(path, "blank_line")
>>> list(docs), starts.tolist()
(['first line', 'second line\\nthird'], [1, 3])

A corpus of any size costs 24 bytes a row in memory (start, end, digest) instead of its text: the rows are
read back from the file when a check, the tokenizer or the error analysis asks for them, in sorted chunks
when iterated. JsonField does the same for the long-text fields of a JSON Lines file (short fields such as
labels are read into lists), ArrowColumn for the text columns of Parquet files and hub datasets (Arrow
buffers, not a Python string a row). The digests stand in for the texts in every global check (duplicates,
train/validation overlap, conflicting labels, fingerprints); `text_digests` gives the same digests for
in-memory columns.

Lines end at "\\n" (a trailing "\\r" is dropped), as editors and `grep -n` count them; a UTF-8 byte-order mark
at the start of the file is skipped.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.errors import DataError

SCAN_CHUNK = 16 << 20  # bytes read per step while scanning
ITER_CHUNK = 4 << 20  # bytes read per step while iterating rows


def digest(value: Any) -> int:
    """64-bit digest of one cell: text by its UTF-8 bytes, anything else (labels: ints, None) by its repr."""
    return text_digest(value.encode()) if isinstance(value, str) else _finish(_hasher(b"o", repr(value).encode()))


def text_digest(raw: bytes) -> int:
    """digest() of the text whose UTF-8 bytes are `raw` (the scanner hashes lines without decoding them)."""
    return _finish(_hasher(b"s", raw))


def _hasher(kind: bytes, raw: bytes) -> Any:
    h = hashlib.blake2b(kind, digest_size=8)
    h.update(raw)
    return h


def _finish(h: Any) -> int:
    return int.from_bytes(h.digest(), "little")


def text_digests(values: Sequence[Any]) -> np.ndarray:
    """One uint64 digest per value; a FileColumn's were computed while scanning its file, an ArrowColumn's
    once on first use."""
    if isinstance(values, (FileColumn, ArrowColumn)):
        return values.digests
    return np.fromiter((digest(v) for v in values), dtype=np.uint64, count=len(values))


def _position(column: Sequence, index: Any) -> int | None:
    """The row a Sequence index names (negative counts from the end), or None for a slice."""
    if isinstance(index, slice):
        return None
    i = int(index)
    if i < 0:
        i += len(column)
    if not 0 <= i < len(column):
        raise IndexError(index)
    return i


class ArrowColumn(Sequence):
    """A text column of a Parquet file or a hub dataset, kept as Arrow buffers (the text bytes and offsets, memory-
    mapped for datasets' cache files) instead of a Python string per row; `rows` selects and orders rows."""

    BATCH = 4096

    def __init__(self, array: Any, rows: np.ndarray | None = None, digests: np.ndarray | None = None) -> None:
        self.array = array.combine_chunks() if hasattr(array, "combine_chunks") else array
        self.rows = rows
        self._digests = digests

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.array)

    def __getitem__(self, index: Any) -> Any:
        i = _position(self, index)
        if i is None:
            return list(self.select(np.arange(len(self))[index]))
        return self.array[int(self.rows[i]) if self.rows is not None else i].as_py()

    def __iter__(self) -> Iterator[Any]:
        import pyarrow as pa

        for start in range(0, len(self), self.BATCH):
            if self.rows is None:
                part = self.array.slice(start, self.BATCH)
            else:
                part = self.array.take(pa.array(self.rows[start:start + self.BATCH]))
            yield from part.to_pylist()

    @property
    def digests(self) -> np.ndarray:
        if self._digests is None:
            self._digests = np.fromiter((digest(v) for v in self), dtype=np.uint64, count=len(self))
        return self._digests

    def select(self, keep: Any) -> ArrowColumn:
        keep = np.asarray(keep, dtype=np.int64)
        rows = self.rows[keep] if self.rows is not None else keep
        return ArrowColumn(self.array, rows, self._digests[keep] if self._digests is not None else None)


class FileColumn(Sequence):
    """The rows of one text file, read back on demand. Row i is the bytes [starts[i], ends[i]) decoded, with
    "\\r\\n" line ends read as "\\n"."""

    def __init__(self, path: Path, starts: np.ndarray, ends: np.ndarray, digests: np.ndarray,
                 irregular: np.ndarray | None = None) -> None:
        self.path, self.starts, self.ends, self.digests = Path(path), starts, ends, digests
        # rows whose value is not a non-blank string (a JsonField's nulls, numbers, missing keys): the only rows
        # the empty-text and text-type checks need to read
        self.irregular = irregular if irregular is not None else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def _decode(self, raw: bytes) -> Any:
        text = raw.decode("utf-8")
        return text.replace("\r\n", "\n") if "\r" in text else text

    def _read(self, start: int, end: int) -> bytes:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return os.pread(fd, end - start, start)
        finally:
            os.close(fd)

    def __getitem__(self, index: Any) -> Any:
        i = _position(self, index)
        if i is None:
            return list(self.select(np.arange(len(self))[index]))
        return self._decode(self._read(int(self.starts[i]), int(self.ends[i])))

    def __iter__(self) -> Iterator[str]:
        """Rows in order, reading the file in chunks of about ITER_CHUNK bytes (rows are usually sorted by
        position; a chunk spans from its first row's start to its last row's end)."""
        n = len(self)
        i = 0
        fd = os.open(self.path, os.O_RDONLY)
        try:
            while i < n:
                j = i + 1
                base = int(self.starts[i])
                while j < n and self.starts[j] >= self.starts[j - 1] and self.ends[j] - base <= ITER_CHUNK:
                    j += 1
                raw = os.pread(fd, int(self.ends[j - 1]) - base, base)
                for k in range(i, j):
                    yield self._decode(raw[int(self.starts[k]) - base:int(self.ends[k]) - base])
                i = j
        finally:
            os.close(fd)

    def _irregular_after(self, keep: np.ndarray) -> np.ndarray:
        if not len(self.irregular):
            return self.irregular
        return np.flatnonzero(np.isin(keep, self.irregular))

    def select(self, keep: Any) -> FileColumn:
        """The rows `keep`, as a column of the same kind (a JsonField keeps its key, a CsvField its field)."""
        keep = np.asarray(keep, dtype=np.int64)
        out = copy.copy(self)
        out.starts, out.ends, out.digests = self.starts[keep], self.ends[keep], self.digests[keep]
        out.irregular = self._irregular_after(keep)
        return out


class JsonField(FileColumn):
    """One key of a JSON Lines file's records, read back from the file: row i is json.loads(line i)[key]."""

    def __init__(self, path: Path, starts: np.ndarray, ends: np.ndarray, digests: np.ndarray,
                 irregular: np.ndarray | None, key: str) -> None:
        super().__init__(path, starts, ends, digests, irregular)
        self.key = key

    def _decode(self, raw: bytes) -> Any:
        return json.loads(raw).get(self.key)


class CsvField(FileColumn):
    """One column of a CSV/TSV file's records, read back from the file: row i is field `index` of the record
    whose bytes (quoted line breaks included) are [starts[i], ends[i]); an empty field reads as None."""

    def __init__(self, path: Path, starts: np.ndarray, ends: np.ndarray, digests: np.ndarray,
                 irregular: np.ndarray | None, index: int, delimiter: str) -> None:
        super().__init__(path, starts, ends, digests, irregular)
        self.index, self.delimiter = index, delimiter

    def _decode(self, raw: bytes) -> Any:
        record = next(csv.reader(io.StringIO(raw.decode("utf-8"), newline=""), delimiter=self.delimiter))
        return record[self.index] if record[self.index] != "" else None


def scan_text_file(path: Path, documents: str) -> tuple[FileColumn, np.ndarray]:
    """(the rows, the 1-based line each row starts on) of a .txt file: one row per non-blank line
    (documents="line") or per block of non-blank lines between blank ones ("blank_line"). One pass over the
    file in SCAN_CHUNK pieces; invalid UTF-8 is a DataError naming the line."""
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    numbers: list[np.ndarray] = []
    digests: list[int] = []
    size = path.stat().st_size
    with open(path, "rb") as fh:
        bom = fh.read(3) == b"\xef\xbb\xbf"
        offset = 3 if bom else 0
        fh.seek(offset)
        line_no = 1
        doc: list[int] | None = None  # blank_line mode: [start, end, first line] of the open document
        doc_hash: Any = None
        while offset < size:
            chunk = fh.read(SCAN_CHUNK)
            cut = chunk.rfind(b"\n") + 1 if offset + len(chunk) < size else len(chunk)
            if cut == 0:  # one line longer than the chunk: read on to its end
                more = chunk
                while cut == 0 and offset + len(more) < size:
                    more += fh.read(SCAN_CHUNK)
                    cut = more.rfind(b"\n") + 1 if offset + len(more) < size else len(more)
                chunk = more
            piece = chunk[:cut]
            fh.seek(offset + cut)
            try:
                piece.decode("utf-8")
            except UnicodeDecodeError as err:
                line = line_no + piece[:err.start].count(b"\n")
                raise DataError(f"{path}: line {line}: not valid UTF-8 (byte 0x{piece[err.start]:02x}); "
                                "re-save the file with UTF-8 encoding") from None
            newlines = np.flatnonzero(np.frombuffer(piece, dtype=np.uint8) == 10)
            line_starts = np.concatenate([[0], newlines + 1])
            line_ends = np.concatenate([newlines, [len(piece)]])
            if line_ends[-1] == line_starts[-1] and len(line_starts) > 1:  # the piece ends with "\n"
                line_starts, line_ends = line_starts[:-1], line_ends[:-1]
            keep_s, keep_e, keep_n = [], [], []
            for k, (s, e) in enumerate(zip(line_starts.tolist(), line_ends.tolist())):
                if e > s and piece[e - 1] == 13:  # "\r\n"
                    e -= 1
                raw = piece[s:e]
                blank = not raw.strip() or (not raw.isascii() and not raw.decode("utf-8").strip())
                if documents == "line":
                    if not blank:
                        keep_s.append(s)
                        keep_e.append(e)
                        keep_n.append(line_no + k)
                        digests.append(text_digest(raw))
                elif blank:
                    if doc is not None:
                        starts.append(np.array([doc[0]], dtype=np.int64))
                        ends.append(np.array([doc[1]], dtype=np.int64))
                        numbers.append(np.array([doc[2]], dtype=np.int64))
                        digests.append(_finish(doc_hash))
                        doc = None
                else:
                    if doc is None:
                        doc = [offset + s, offset + e, line_no + k]
                        doc_hash = _hasher(b"s", b"")
                    else:
                        doc[1] = offset + e
                        doc_hash.update(b"\n")
                    doc_hash.update(raw)
            if keep_s:
                starts.append(offset + np.asarray(keep_s, dtype=np.int64))
                ends.append(offset + np.asarray(keep_e, dtype=np.int64))
                numbers.append(np.asarray(keep_n, dtype=np.int64))
            line_no += len(newlines)
            offset += cut
        if doc is not None:
            starts.append(np.array([doc[0]], dtype=np.int64))
            ends.append(np.array([doc[1]], dtype=np.int64))
            numbers.append(np.array([doc[2]], dtype=np.int64))
            digests.append(_finish(doc_hash))

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    column = FileColumn(path, cat(starts), cat(ends), np.asarray(digests, dtype=np.uint64))
    return column, cat(numbers)
