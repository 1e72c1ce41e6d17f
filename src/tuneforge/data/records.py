"""Record files read in one pass with their long-text columns left in the file: JSON Lines, CSV/TSV and
JSON arrays of records.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "train.csv"
>>> _ = path.write_text('text,label\\n"a first, quoted text",pos\\n"a second\\nspanning two lines",neg\\n')
>>> columns, lines = scan_delimited_file(path, ",")
>>> columns["text"], columns["label"], lines.tolist()
(['a first, quoted text', 'a second\\nspanning two lines'], ['pos', 'neg'], [2, 3])

A column whose values are text averaging LAZY_MEAN_CHARS characters or more over the first LAZY_SAMPLE
records stays in the file (data/columns.py JsonField / CsvField: the record's byte span and a digest, 24
bytes a row, plus the rows whose value is missing or not text); every other column (labels, ids, short text,
nested values) is a Python list. Each problem is a DataError naming the file and line.
"""

from __future__ import annotations

import csv
import json
import re
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.data.columns import CsvField, FileColumn, JsonField, digest, scan_text_file
from tuneforge.errors import DataError

csv.field_size_limit(2**31 - 1)  # a long text field is data, not an error

LAZY_SAMPLE = 1000  # records looked at before a column is chosen to stay in the file
LAZY_MEAN_CHARS = 64  # ... when its values are text this long on average


def _regular(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


class _Collector:
    """Gathers records column by column; after LAZY_SAMPLE records, long-text columns keep only digests."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.values: dict[str, list[Any]] = {}
        self.lazy: dict[str, tuple[Any, list[int]]] = {}  # key -> (digests, irregular rows)
        self.count = 0

    def add(self, record: dict[str, Any]) -> None:
        i = self.count
        for key in record:
            if key not in self.values and key not in self.lazy:
                self.order.append(key)
                self.values[key] = [None] * i  # a key first seen late: earlier rows lack it
        for key, (digests, irregular) in self.lazy.items():
            value = record.get(key)
            digests.append(digest(value))
            if not _regular(value):
                irregular.append(i)
        for key, values in self.values.items():
            values.append(record.get(key))
        self.count += 1
        if self.count == LAZY_SAMPLE:
            for key in [k for k, v in self.values.items() if _long_text(v)]:
                values = self.values.pop(key)
                self.lazy[key] = (array("Q", (digest(v) for v in values)),
                                  [j for j, v in enumerate(values) if not _regular(v)])

    def columns(self, field: Callable[[str, np.ndarray, np.ndarray], FileColumn]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self.order:
            if key in self.lazy:
                digests, irregular = self.lazy[key]
                out[key] = field(key, np.frombuffer(digests, np.uint64) if len(digests) else
                                 np.zeros(0, np.uint64), np.asarray(irregular, dtype=np.int64))
            else:
                out[key] = self.values[key]
        return out


def _long_text(values: list[Any]) -> bool:
    text = [v for v in values if isinstance(v, str)]
    return len(text) >= len(values) / 2 and sum(map(len, text)) >= LAZY_MEAN_CHARS * len(text)


def scan_jsonl_file(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    """(columns, 1-based line of each record) of a JSON Lines file, one json.loads per line."""
    lines, numbers = scan_text_file(path, "line")
    collector = _Collector()
    for i, raw in enumerate(lines):
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {numbers[i]}: invalid JSON ({err.msg} at column {err.colno}); "
                            "each line must be one JSON object") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {numbers[i]}: expected a JSON object like "
                            f'{{"text": "...", "label": "..."}}, got {type(record).__name__}')
        collector.add({str(k): v for k, v in record.items()})
    return collector.columns(lambda key, digests, irregular: JsonField(
        path, lines.starts, lines.ends, digests, irregular, key)), numbers


def _lines(path: Path, ends: Any) -> Iterator[str]:
    """The file's lines decoded (line ends kept, for the csv module), appending to `ends` the byte offset just
    past each line before yielding it."""
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}: line {number}: not valid UTF-8 (byte 0x{raw[err.start]:02x}); "
                                "re-save the file with UTF-8 encoding") from None
            offset += len(raw)
            ends.append(offset)
            yield text


def scan_delimited_file(path: Path, delimiter: str) -> tuple[dict[str, Any], np.ndarray]:
    """(columns, 1-based line each record starts on) of a CSV or TSV file with a header row."""
    line_ends = array("q")  # byte offset just past each line read so far
    reader = csv.reader(_lines(path, line_ends), delimiter=delimiter, strict=True)
    kind = "TSV" if delimiter == "\t" else "CSV"
    header: list[str] | None = None
    collector = _Collector()
    starts, ends, numbers = array("q"), array("q"), array("q")
    start = 1
    try:
        for record in reader:
            if header is None:
                header = [h.strip() for h in record]
                dupes = sorted({h for h in header if header.count(h) > 1})
                if dupes:
                    raise DataError(f"{path}: line 1: duplicate column name(s) {', '.join(dupes)}; rename them")
            elif record:  # (a blank line is skipped)
                if len(record) != len(header):
                    raise DataError(f"{path}: line {start}: expected {len(header)} fields "
                                    f"({', '.join(header)}), found {len(record)}; quote fields that contain "
                                    f"'{delimiter}' with double quotes")
                collector.add({h: (v if v != "" else None) for h, v in zip(header, record)})
                starts.append(line_ends[start - 2])  # records start after the header: start >= 2
                ends.append(line_ends[reader.line_num - 1])
                numbers.append(start)
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{path}: line {start}: malformed {kind} ({err}); check quoting on that line") from None
    if header is None or not any(header):
        raise DataError(f"{path}: the file is empty; expected a header row such as 'text,label'")
    if collector.count == 0:
        return {h: [] for h in header}, np.zeros(0, dtype=np.int64)
    first_start = np.frombuffer(starts, np.int64)
    last_end = np.frombuffer(ends, np.int64)
    index = {h: j for j, h in enumerate(header)}
    return collector.columns(lambda key, digests, irregular: CsvField(
        path, first_start, last_end, digests, irregular, index[key], delimiter)), np.frombuffer(numbers, np.int64)


_SPACE = re.compile(r"[ \t\r\n]*")
SCAN_BYTES = 8 << 20  # bytes decoded at a time


def json_array_file(path: Path) -> bool:
    """Whether the file's first character (after a BOM and whitespace) opens a JSON array."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16).lstrip(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"[")


class _Window:
    """The decoded text of a file, SCAN_BYTES at a time, read from `pos`; `byte` and `line` are the file position
    and line of text[pos]. Consumed text is dropped only when more is decoded (no copy per record)."""

    def __init__(self, path: Path) -> None:
        import codecs

        self.path, self.fh = path, open(path, "rb")
        bom = self.fh.read(3) == b"\xef\xbb\xbf"
        self.fh.seek(3 if bom else 0)
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text, self.pos, self.byte, self.line, self.eof = "", 0, 3 if bom else 0, 1, False

    def more(self) -> bool:
        """Decode the next piece onto the text; False at the end of the file."""
        if self.eof:
            return False
        raw = self.fh.read(SCAN_BYTES)
        self.eof = not raw
        self.text, self.pos = self.text[self.pos:], 0
        try:
            self.text += self.decoder.decode(raw, final=self.eof)
        except UnicodeDecodeError:
            raise DataError(f"{self.path}: line {self.line + self.text.count(chr(10))}: not valid UTF-8; re-save "
                            "the file with UTF-8 encoding") from None
        return True

    def consume(self, n: int) -> None:
        """Move past the next n characters."""
        end = self.pos + n
        self.byte += len(self.text[self.pos:end].encode())
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def skip_space(self) -> str:
        """The next non-space character ('' at the end of the file), consuming the space before it."""
        while True:
            i = _SPACE.match(self.text, self.pos).end()
            self.consume(i - self.pos)
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def close(self) -> None:
        self.fh.close()


def scan_json_array(path: Path) -> tuple[dict[str, Any], np.ndarray | None]:
    """(columns, 1-based line each record starts on, or None when records share lines) of a .json file
    holding one array of objects, read SCAN_BYTES at a time: json's own decoder takes one record at a time off
    the decoded text (`raw_decode`), so the file is never one Python object; long-text columns stay in the file
    (each record's byte span, as for JSON Lines)."""
    collector = _Collector()
    starts, ends, numbers = array("q"), array("q"), array("q")
    decoder = json.JSONDecoder()
    window = _Window(path)
    try:
        window.skip_space()
        window.consume(1)  # the "["
        while True:
            char = window.skip_space()
            if char == "":
                raise DataError(f"{path}: the JSON array is not closed (the file ends inside it); check that the "
                                "file was written completely")
            if char == "]":
                break
            record, end = _decode_one(path, window, decoder)
            if not isinstance(record, dict):
                raise DataError(f"{path}: line {window.line}: expected a JSON object like "
                                f'{{"text": "...", "label": "..."}}, got {type(record).__name__}')
            collector.add({str(k): v for k, v in record.items()})
            starts.append(window.byte)
            numbers.append(window.line)
            window.consume(end - window.pos)
            ends.append(window.byte)
            char = window.skip_space()
            if char == ",":
                window.consume(1)
            elif char != "]":
                raise DataError(f"{path}: line {window.line}: expected ',' or ']' after a record, found "
                                f"{char or 'the end of the file'!r}")
        window.consume(1)
        if window.skip_space():
            raise DataError(f"{path}: line {window.line}: text after the closing ']' of the JSON array; a .json "
                            "file holds one array (or use .jsonl, one object per line)")
    finally:
        window.close()
    if collector.count == 0:
        return {}, np.zeros(0, dtype=np.int64)
    first, last = np.frombuffer(starts, np.int64), np.frombuffer(ends, np.int64)
    lines = np.frombuffer(numbers, np.int64)
    # records sharing a line (a compact array) are told apart by their number, "row N", not "line 1"
    return collector.columns(lambda key, digests, irregular: JsonField(path, first, last, digests, irregular, key)
                             ), lines if bool(np.all(np.diff(lines) > 0)) else None


def _decode_one(path: Path, window: _Window, decoder: json.JSONDecoder) -> tuple[Any, int]:
    """The JSON value at the window's position and the index just past it, decoding more of the file while
    the value runs past what is decoded."""
    while True:
        try:
            return decoder.raw_decode(window.text, window.pos)
        except json.JSONDecodeError as err:
            if window.more():
                continue
            line = window.line + window.text.count("\n", window.pos, err.pos)
            raise DataError(f"{path}: line {line}: invalid JSON in the record starting on line {window.line} "
                            f"({err.msg}); fix that record") from None
