"""Read local files and hub datasets into Tables, turning every problem into one DataError line.

>>> from tuneforge.data.readers import read_file
>>> table = read_file("train.csv")          # doctest: +SKIP
>>> table.columns.keys(), table.where(0)    # doctest: +SKIP
(dict_keys(['text', 'label']), 'train.csv, line 2')

Formats by extension: .csv, .tsv, .json (a list of records or a dict of columns; JSON Lines also
accepted; a nested SQuAD file becomes one row per question, data/squad.py), .jsonl/.ndjson, .parquet,
.txt (one example per non-empty line, column `text`), .conll (token files, data/conll.py; a task that tags
tokens reads .txt files as CoNLL too). Empty cells read as None. A .txt file is scanned, not loaded: its rows
are read back from disk when used (data/columns.py), so a corpus larger than memory can be trained on.
Parquet and hub text columns stay in Arrow buffers (memory-mapped for hub datasets); JSON Lines, CSV and TSV
columns of long text stay in the file (data/records.py) while short fields (labels) are read; so do those of a
.json array of records (scanned through a memory map); any other .json layout (an object of columns, the
nested SQuAD layout, {"data": [...]}) is one document, read into memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tuneforge.data.columns import ArrowColumn, scan_text_file
from tuneforge.data.records import json_array_file, scan_delimited_file, scan_json_array, scan_jsonl_file
from tuneforge.data.squad import flatten_squad, is_squad
from tuneforge.data.table import Table
from tuneforge.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".txt": "text", ".conll": "conll"}

def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        start = err.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)  # utf-8-sig counts after the BOM
        line = data[:start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not valid UTF-8 (byte 0x{data[start]:02x}); "
                        "re-save the file with UTF-8 encoding") from None


def _has_text(path: Path) -> bool:
    """Whether the file holds anything but whitespace (read in pieces: a huge file is not loaded for this)."""
    with open(path, "rb") as fh:
        while piece := fh.read(1 << 20):
            if piece.strip() and piece.strip() != b"\xef\xbb\xbf":
                return True
    return False


def _records_to_table(path: Path, records: list[Any], lines: list[int] | None) -> Table:
    keys: dict[str, None] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            where = f"line {lines[i]}" if lines else f"record {i + 1}"
            raise DataError(f"{path}: {where}: expected a JSON object like "
                            f'{{"text": "...", "label": "..."}}, got {type(rec).__name__}')
        keys.update(dict.fromkeys(map(str, rec)))
    columns = {k: [rec.get(k) for rec in records] for k in keys}
    return Table(str(path), columns, lines)


def _read_json(path: Path, text: str) -> Table:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # several top-level values: JSON Lines with a .json name
            columns, lines = scan_jsonl_file(path)
            return Table(str(path), columns, lines)
        raise DataError(f"{path}: line {err.lineno}: invalid JSON ({err.msg} at column {err.colno}); "
                        "a .json file must hold one array of objects (or use .jsonl, one object per line)") from None
    if is_squad(data):  # the nested SQuAD layout (data -> paragraphs -> qas): one row per question
        return flatten_squad(str(path), data, text)
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list) \
            and all(isinstance(r, dict) for r in next(iter(data.values()))):
        data = next(iter(data.values()))  # {"data": [records]}
    if isinstance(data, list):
        return _records_to_table(path, data, None)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        sizes = {k: len(v) for k, v in data.items()}
        if len(set(sizes.values())) > 1:
            raise DataError(f"{path}: columns have different lengths ({sizes}); every column needs one "
                            "value per row")
        return Table(str(path), {str(k): list(v) for k, v in data.items()})
    raise DataError(f"{path}: expected a JSON list of records or an object of equal-length columns, "
                    f"got {type(data).__name__}")


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for corrupt files
        raise DataError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    return Table(str(path), arrow_columns(table))


def _read_text(path: Path, documents: str) -> Table:
    """.txt: one example per non-empty line, or (documents="blank_line") per blank-line-separated block. The
    text stays in the file (data/columns.py): a corpus of any size costs a few tens of bytes a row."""
    column, lines = scan_text_file(path, documents)
    if len(column) == 0:
        raise DataError(f"{path}: the file is empty")
    return Table(str(path), {"text": column}, lines)


def read_file(path: str | os.PathLike, key: str = "data.train_file", documents: str = "line",
              conll: tuple[str, str] | None = None) -> Table:
    """Read one local data file; `key` names the config key in error messages; `documents` says how a .txt
    file splits into examples ("line" or "blank_line"). `conll`: (tokens column, tags column) for a task that
    tags tokens: .conll and .txt files are then CoNLL token files (data/conll.py)."""
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt in ("text", "conll") and conll is not None:
        fmt = "conll"
    elif fmt == "conll":
        raise DataError(f"{key}: {str(p)!r} is a CoNLL token file (a token and its tag per line), which only a "
                        "token-tagging task reads; give this task a .csv/.jsonl/.json/.parquet/.txt file")
    if fmt is None:
        raise DataError(f"{key}: unsupported file type {p.suffix or '(none)'!r} for {str(p)!r}; "
                        f"use one of {', '.join(sorted(FORMATS))}")
    if not p.exists():
        raise DataError(f"{key}: file not found: {str(p)!r} (relative paths start at {os.getcwd()})")
    if p.is_dir():
        raise DataError(f"{key}: {str(p)!r} is a folder; give a data file")
    if fmt == "conll":
        from tuneforge.data.conll import parse_conll

        assert conll is not None
        text = _decode(p, p.read_bytes())
        if not text.strip():
            raise DataError(f"{p}: the file is empty")
        table = parse_conll(p, text, *conll)
    elif fmt == "parquet":
        table = _read_parquet(p)
    elif fmt == "text":
        table = _read_text(p, documents)
    elif fmt == "json" and json_array_file(p):  # an array of records: scanned, never loaded whole
        columns, lines = scan_json_array(p)
        table = Table(str(p), columns, lines)
    elif fmt in ("jsonl", "csv", "tsv"):
        if p.stat().st_size == 0 or not _has_text(p):
            raise DataError(f"{p}: the file is empty")
        columns, lines = (scan_jsonl_file(p) if fmt == "jsonl" else
                          scan_delimited_file(p, "," if fmt == "csv" else "\t"))
        table = Table(str(p), columns, lines)
    else:
        text = _decode(p, p.read_bytes())
        if not text.strip():
            raise DataError(f"{p}: the file is empty")
        table = _read_json(p, text)
    if len(table) == 0:
        raise DataError(f"{p}: no data rows (only a header or nothing at all)")
    return table


VALIDATION_SPLITS = ("validation", "valid", "dev", "val")


def _load_dataset(name: str, config_name: str | None, streaming: bool = False) -> Any:
    """datasets.load_dataset with its failures as one DataError line."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise DataError("data.dataset_name: the `datasets` package is not installed") from None
    try:
        return datasets.load_dataset(name, config_name, streaming=streaming)
    except (ConnectionError, OSError) as err:
        raise DataError(f"data.dataset_name: cannot {'stream' if streaming else 'load'} {name!r} from the Hugging "
                        f"Face hub (no network or not found: {str(err).splitlines()[0][:200]}); download it and "
                        "pass data.train_file with a local path") from None
    except ValueError as err:
        raise DataError(f"data.dataset_name: {name!r}: {str(err).splitlines()[0][:300]}") from None


def read_hub(name: str, config_name: str | None, splits: tuple[str, ...] = ("train",)) -> dict[str, Table]:
    """Load a hub dataset with `datasets.load_dataset`; ClassLabel ids become their names."""
    loaded = _load_dataset(name, config_name)
    out: dict[str, Table] = {}
    for split, ds in loaded.items():
        if ds._indices is not None:  # a view with an index mapping: materialise it (load_dataset gives none)
            ds = ds.flatten_indices()
        columns = arrow_columns(ds.data.table)  # datasets memory-maps its Arrow cache files
        for col, to_names in _label_names(ds.features).items():
            columns[col] = [to_names(v) for v in columns[col]]
        out[split] = Table(f"hub dataset {name}[{split}]", columns, None, split)
    return out


STREAM_SHUFFLE_BUFFER = 10_000


def stream_hub(name: str, config_name: str | None, caps: dict[str, int | None], folder: Path) -> dict[str, Table]:
    """A hub dataset streamed (load_dataset(streaming=True)): each split's rows, at most caps[split] of them (the
    training split through a seeded shuffle buffer first), written once to `folder/<dataset>/<split>.jsonl` and
    scanned like a local JSON Lines file, so neither the dataset nor a split is ever held in memory; ClassLabel ids
    become their names."""
    import hashlib

    loaded = _load_dataset(name, config_name, streaming=True)
    key = hashlib.sha256(json.dumps([name, config_name, caps], sort_keys=True).encode()).hexdigest()[:16]
    target = folder / key
    target.mkdir(parents=True, exist_ok=True)
    out: dict[str, Table] = {}
    for split, ds in loaded.items():
        cap = caps.get(split)
        if cap and split == "train":
            ds = ds.shuffle(seed=0, buffer_size=STREAM_SHUFFLE_BUFFER)
        names = _label_names(ds.features)
        path, tmp = target / f"{split}.jsonl", target / f".{split}.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            for i, row in enumerate(ds):
                if cap is not None and i >= cap:
                    break
                fh.write(json.dumps({k: names[k](v) if k in names else v for k, v in row.items()},
                                    ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
        if path.stat().st_size == 0:
            out[split] = Table(f"hub dataset {name}[{split}] (streamed)", {}, None, split)
            continue
        columns, _ = scan_jsonl_file(path)
        out[split] = Table(f"hub dataset {name}[{split}] (streamed)", columns, None, split)
    return out


def _label_names(features: Any) -> dict[str, Any]:
    """Column -> a function mapping ClassLabel ids (or lists of them) to their names, from a dataset's features."""
    import datasets

    out: dict[str, Any] = {}
    for col, feature in (features or {}).items():
        if isinstance(feature, datasets.ClassLabel):
            out[col] = lambda v, f=feature: f.int2str(v) if v is not None and v >= 0 else None
        inner = getattr(feature, "feature", None)
        if isinstance(feature, (datasets.List, datasets.Sequence, datasets.LargeList)) and \
                isinstance(inner, datasets.ClassLabel):
            out[col] = lambda v, f=inner: [f.int2str(x) for x in v] if v is not None else None
    return out


def arrow_columns(table: Any) -> dict[str, Any]:
    """Columns of a pyarrow Table: text stays in Arrow buffers (ArrowColumn), anything else (labels, ids, nested
    values such as chat messages) becomes a Python list."""
    import pyarrow as pa

    out: dict[str, Any] = {}
    for name in table.column_names:
        column = table.column(name)
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
            out[str(name)] = ArrowColumn(column)
        else:
            out[str(name)] = column.to_pylist()
    return out
