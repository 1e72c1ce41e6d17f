"""The shared data path every task uses: read splits, check columns, drop empty rows, split, dedupe.

>>> from tuneforge.config import load_config
>>> from tuneforge.data.pipeline import read_and_clean
>>> cfg = load_config("run.yaml")                                                # doctest: +SKIP
>>> tables, report = read_and_clean(cfg.data, {"data.text_column": "text"}, ["text"])  # doctest: +SKIP

Everything here is plain Python (no torch), so bad data is reported in well under a second.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

from tuneforge.config.schema import DataConfig
from tuneforge.data.checks import (
    check_text_types,
    conflicting_labels,
    drop_duplicates,
    drop_empty_text,
    overlap_warning,
    require_columns,
    stratified_split,
)
from tuneforge.data.readers import VALIDATION_SPLITS, read_file, read_hub
from tuneforge.data.table import DataReport, SplitReport, Table
from tuneforge.errors import DataError


def read_splits(data: DataConfig, conll: tuple[str, str] | None = None) -> dict[str, Table]:
    """train (always), validation and test when given, from local files or a hub dataset. `conll`: (tokens
    column, tags column) to read .conll/.txt files as CoNLL token files (read_file)."""
    if data.dataset_name:
        hub = _hub_splits(data)
        if "train" not in hub:
            raise DataError(f"data.dataset_name: {data.dataset_name!r} has no 'train' split "
                            f"(splits: {', '.join(hub)})")
        out = {"train": hub["train"]}
        for candidate in VALIDATION_SPLITS:
            if candidate in hub:
                out["validation"] = hub[candidate]
                break
        if "test" in hub:
            out["test"] = hub["test"]
    else:
        docs = data.document_separator
        out = {"train": read_file(data.train_file, "data.train_file", docs, conll)}
        if data.validation_file:
            out["validation"] = read_file(data.validation_file, "data.validation_file", docs, conll)
        if data.test_file:
            out["test"] = read_file(data.test_file, "data.test_file", docs, conll)
    for name, table in out.items():
        table.name = name
    return out


def _hub_splits(data: DataConfig) -> dict[str, Table]:
    if not data.dataset_streaming:
        return read_hub(data.dataset_name, data.dataset_config_name)
    from tuneforge.data.cache import cache_root
    from tuneforge.data.readers import stream_hub

    caps = {"train": data.max_train_samples, **{v: data.max_eval_samples for v in VALIDATION_SPLITS}}
    return stream_hub(data.dataset_name, data.dataset_config_name, caps,
                      cache_root(data.preprocessing_cache_dir).parent / "streamed")


def read_and_clean(data: DataConfig, wanted: dict[str, str | None], text_columns: list[str]
                   ) -> tuple[dict[str, Table], DataReport]:
    """Read every split, check `wanted` columns exist, drop rows with empty text (counted, located)."""
    tables = read_splits(data)
    return tables, clean_tables(tables, wanted, text_columns)


def clean_tables(tables: dict[str, Table], wanted: dict[str, str | None], text_columns: list[str]) -> DataReport:
    """Check `wanted` columns exist in every split and drop rows with empty text (in place; counted)."""
    report = DataReport()
    for name, table in tables.items():
        require_columns(table, wanted)
        kept, dropped = drop_empty_text(table, text_columns)
        if len(kept) == 0:
            raise DataError(f"{table.source}: every row has empty text in column(s) {', '.join(text_columns)}")
        check_text_types(kept, text_columns)
        report.splits[name] = SplitReport(source=table.source, rows_read=len(table), dropped_empty=len(dropped),
                                          dropped_empty_where=table.concat_locations(dropped))
        tables[name] = kept
    return report


def held_out_percent(rows: int, data: DataConfig) -> tuple[float, bool]:
    """(percent of `rows` to hold out, whether validation_split_max_rows lowered it).

    >>> from tuneforge.config.schema import DataConfig
    >>> held_out_percent(2_000, DataConfig()), held_out_percent(1_000_000, DataConfig())
    ((10.0, False), (0.5, True))
    """
    percent = data.validation_split_percentage
    cap = data.validation_split_max_rows
    if cap and rows * percent / 100 > cap:
        return 100.0 * cap / rows, True
    return percent, False


def as_eval_split(tables: dict[str, Table], report: DataReport) -> Table:
    """The one file `tuneforge evaluate` reads (read as the training split) renamed "eval", in its table and in
    the data report; the table is returned."""
    table = tables["train"]
    table.name = "eval"
    report.splits["eval"] = report.splits.pop("train")
    return table


def finish_splits(tables: dict[str, Table], report: DataReport, data: DataConfig, seed: int,
                  text_columns: list[str], target_column: str | None, stratify: bool,
                  splitter: Callable[[list[Any], float, int], tuple[list[int], list[int], list[str]]] | None = None
                  ) -> dict[str, Table]:
    """Dedupe training, make a validation split when none was given, warn on conflicts and overlap, and
    apply max_train_samples / max_eval_samples. `target_column` is the label (or target text) column;
    `splitter(labels, percent, seed)` replaces the stratified split (e.g. multi-label iterative stratification)."""
    key_columns = text_columns + ([target_column] if target_column else [])
    train, n_dupes = drop_duplicates(tables["train"], key_columns)
    report.splits["train"].dropped_duplicates = n_dupes
    if target_column:
        conflict = conflicting_labels(train, text_columns, target_column)
        if conflict:
            report.warnings.append(conflict)
    if "validation" not in tables:
        percent, capped = held_out_percent(len(train), data)
        if stratify and target_column:
            split = splitter or stratified_split
            train_idx, val_idx, notes = split(train.columns[target_column], percent, seed)
            report.warnings += notes
        else:
            order = np.random.default_rng(seed).permutation(len(train))
            n_val = max(1, round(len(order) * percent / 100))
            train_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])
        if not len(val_idx) or not len(train_idx):
            raise DataError(f"{train.source}: {len(train)} rows are too few to hold out a validation split; "
                            "add data or give data.validation_file")
        held = f"{data.validation_split_percentage:g}% held out" if not capped else (
            f"{percent:.3g}% held out: {data.validation_split_percentage:g}% capped at "
            f"data.validation_split_max_rows={data.validation_split_max_rows}")
        source = f"{train.source} ({held}, seed {seed})"
        validation = train.select(val_idx)
        validation.name, validation.source = "validation", source
        report.splits["validation"] = SplitReport(source=source, rows_read=len(val_idx))
        report.splits["train"].held_out = len(val_idx)
        train = train.select(train_idx)
        tables["validation"] = validation
    tables["train"] = train
    for name in ("validation", "test"):
        if name in tables:
            warning = overlap_warning(train, tables[name], text_columns)
            if warning:
                report.warnings.append(warning)
    if data.max_train_samples and data.max_train_samples < len(train):
        keep = sorted(random.Random(seed).sample(range(len(train)), data.max_train_samples))
        tables["train"] = train.select(keep)
    if data.max_eval_samples and "validation" in tables and data.max_eval_samples < len(tables["validation"]):
        tables["validation"] = tables["validation"].select(list(range(data.max_eval_samples)))
    for name, table in tables.items():
        report.splits[name].rows_kept = len(table)
    return tables
