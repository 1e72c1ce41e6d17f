"""Every data error through `tuneforge train` (in-process, no model: data is checked first), plus the
non-error behaviour of `ClassificationTask.prepare_data` (cleaning, warnings, splits, formats).

Product rule: one line naming the file, line/row and column where it applies and how to fix it, exit 2.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import one_line_error

from tuneforge.config import load_config
from tuneforge.errors import DataError, UserError
from tuneforge.runs.train import prepare_output_dir
from tuneforge.tasks import get_task

BASE = ["task=classification", "model_name_or_path=unused"]


# ---- helpers -------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run from tmp_path (relative paths, runs/) with a private tokenization cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))


def write_csv(path: Path, rows: list[list], header=("text", "label"), delimiter: str = ",") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def good_rows(n_per_class: int = 6, labels=("neg", "pos")) -> list[list[str]]:
    return [[f"{label} example number {i}", label] for label in labels for i in range(n_per_class)]


def train_error(capsys, *overrides: str) -> str:
    """`tuneforge train` in-process: exit 2 and exactly one `error:` line on stderr; returns that line."""
    return one_line_error(capsys, ["train", *BASE, *overrides])


def prepare(*overrides: str):
    cfg = load_config(None, BASE + list(overrides))
    return get_task("classification").prepare_data(cfg)


# ---- errors: files --------------------------------------------------------------------------------------

def test_missing_train_file(capsys, tmp_path):
    line = train_error(capsys, f"train_file={tmp_path / 'missing.csv'}")
    assert "data.train_file" in line and "missing.csv" in line and "not found" in line


def test_missing_validation_file(capsys, tmp_path):
    train = write_csv(tmp_path / "train.csv", good_rows())
    line = train_error(capsys, f"train_file={train}", "validation_file=dev.csv")
    assert "data.validation_file" in line and "dev.csv" in line and "not found" in line


def test_relative_missing_file_says_where_relative_paths_start(capsys, tmp_path):
    line = train_error(capsys, "train_file=data/train.csv")
    assert "data/train.csv" in line and str(tmp_path) in line


def test_folder_instead_of_file(capsys, tmp_path):
    (tmp_path / "data.csv").mkdir()
    line = train_error(capsys, "train_file=data.csv")
    assert "folder" in line and "data.csv" in line


@pytest.mark.parametrize("name", ["train.xlsx", "train"])
def test_unsupported_extension(capsys, tmp_path, name):
    (tmp_path / name).write_text("text,label\na,b\n")
    line = train_error(capsys, f"train_file={name}")
    assert "unsupported file type" in line and name in line and ".csv" in line and ".jsonl" in line


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"], ids=["zero-bytes", "blank-lines"])
def test_empty_file(capsys, tmp_path, content):
    (tmp_path / "train.csv").write_bytes(content)
    line = train_error(capsys, "train_file=train.csv")
    assert "train.csv" in line and "empty" in line


@pytest.mark.parametrize("name, content", [
    ("train.csv", "text,label\n"), ("train.tsv", "text\tlabel\n"), ("train.json", "[]"),
])
def test_header_only_or_no_records(capsys, tmp_path, name, content):
    (tmp_path / name).write_text(content)
    line = train_error(capsys, f"train_file={name}")
    assert name in line and "no data rows" in line


def test_unreadable_parquet(capsys, tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"this is not parquet")
    line = train_error(capsys, "train_file=train.parquet")
    assert "train.parquet" in line and "Parquet" in line


# ---- errors: encoding and syntax --------------------------------------------------------------------------

@pytest.mark.parametrize("name, data", [
    ("train.csv", b"text,label\ngood,a\nbad \xff\xfe,b\ngood again,a\n"),
    ("train.tsv", b"text\tlabel\ngood\ta\nbad \xe9\tb\n"),
    ("train.jsonl", b'{"text": "good", "label": "a"}\n{"text": "ok", "label": "b"}\n{"text": "bad \xff"}\n'),
    ("train.csv", b"\xef\xbb\xbftext,label\ngood,a\nbad \xff,b\n"),  # a BOM must not shift the position
    ("train.csv", b"text,label\r\ngood,a\r\nbad \xc3\x28,b\r\n"),    # CRLF
], ids=["csv", "tsv", "jsonl", "csv-with-bom", "csv-crlf"])
def test_invalid_utf8_names_the_line(capsys, tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    line = train_error(capsys, f"train_file={name}")
    assert f"{name}: line 3:" in line and "UTF-8" in line
    bad_byte = data[data.index(b"bad ") + 4]
    assert f"0x{bad_byte:02x}" in line


def test_csv_row_with_extra_field(capsys, tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nfine,a\nhello, world,b\nfine too,b\n")
    line = train_error(capsys, "train_file=train.csv")
    assert "train.csv: line 3:" in line and "expected 2 fields" in line and "found 3" in line
    assert "quote" in line


def test_csv_row_with_missing_field(capsys, tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nfine,a\nfine too,b\nno label here\n")
    line = train_error(capsys, "train_file=train.csv")
    assert "train.csv: line 4:" in line and "found 1" in line


def test_csv_line_numbers_count_multiline_quoted_fields(capsys, tmp_path):
    (tmp_path / "train.csv").write_text('text,label\n"spans\ntwo lines",a\nfine,b\nbroken,b,extra\n')
    line = train_error(capsys, "train_file=train.csv")
    assert "train.csv: line 5:" in line


def test_csv_unterminated_quote(capsys, tmp_path):
    (tmp_path / "train.csv").write_text('text,label\nfine,a\n"never closed,b\nmore,a\n')
    line = train_error(capsys, "train_file=train.csv")
    assert "train.csv: line 3:" in line and "malformed CSV" in line and "quot" in line


def test_tsv_row_with_extra_field(capsys, tmp_path):
    (tmp_path / "train.tsv").write_text("text\tlabel\nfine\ta\nfine\tb\textra\n")
    line = train_error(capsys, "train_file=train.tsv")
    assert "train.tsv: line 3:" in line and "found 3" in line


def test_csv_duplicate_header(capsys, tmp_path):
    (tmp_path / "train.csv").write_text("text,text,label\na,b,c\n")
    line = train_error(capsys, "train_file=train.csv")
    assert "train.csv: line 1:" in line and "duplicate" in line and "text" in line


def test_jsonl_broken_line(capsys, tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"}\n'
                                          '{"text": "c", "label": }\n')
    line = train_error(capsys, "train_file=train.jsonl")
    assert "train.jsonl: line 4:" in line and "invalid JSON" in line and "column" in line


def test_jsonl_line_that_is_not_an_object(capsys, tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n["b", "y"]\n')
    line = train_error(capsys, "train_file=train.jsonl")
    assert "train.jsonl: line 2:" in line and "JSON object" in line


def test_json_document_broken(capsys, tmp_path):
    (tmp_path / "train.json").write_text('[\n  {"text": "a", "label": "x"},\n  {"text": "b" "label": "y"}\n]\n')
    line = train_error(capsys, "train_file=train.json")
    assert "train.json: line 3:" in line and "invalid JSON" in line


def test_json_lines_in_a_json_file_with_a_broken_line(capsys, tmp_path):
    (tmp_path / "train.json").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{oops}\n')
    line = train_error(capsys, "train_file=train.json")
    assert "train.json: line 3:" in line


def test_json_columns_of_different_lengths(capsys, tmp_path):
    (tmp_path / "train.json").write_text('{"text": ["a", "b", "c"], "label": ["x", "y"]}')
    line = train_error(capsys, "train_file=train.json")
    assert "train.json" in line and "different lengths" in line


# ---- errors: columns and values ---------------------------------------------------------------------------

def test_missing_column_lists_columns_and_suggests_nearest(capsys, tmp_path):
    write_csv(tmp_path / "train.csv", good_rows(), header=("txt", "label"))
    line = train_error(capsys, "train_file=train.csv")
    assert "train.csv" in line and "'text'" in line and "data.text_column" in line
    assert "columns are: txt, label" in line
    assert "set data.text_column=txt" in line


def test_missing_label_column(capsys, tmp_path):
    write_csv(tmp_path / "train.csv", good_rows(), header=("text", "category"))
    line = train_error(capsys, "train_file=train.csv")
    assert "'label'" in line and "data.label_column" in line and "text, category" in line


def test_missing_column_in_validation_file(capsys, tmp_path):
    write_csv(tmp_path / "train.csv", good_rows())
    write_csv(tmp_path / "dev.csv", good_rows(2), header=("sentence", "label"))
    line = train_error(capsys, "train_file=train.csv", "validation_file=dev.csv")
    assert "dev.csv" in line and "'text'" in line and "sentence, label" in line


def test_missing_text_pair_column(capsys, tmp_path):
    write_csv(tmp_path / "train.csv", good_rows())
    line = train_error(capsys, "train_file=train.csv", "text_pair_column=hypothesis")
    assert "'hypothesis'" in line and "data.text_pair_column" in line


@pytest.mark.parametrize("name", ["train.csv", "train.jsonl"])
def test_text_without_label_names_line_and_column(capsys, tmp_path, name):
    rows = [["a first text", "x"], ["a second text", "y"], ["no label", None], ["a third", "x"]]
    if name.endswith(".csv"):
        write_csv(tmp_path / name, [[t, lab or ""] for t, lab in rows])
    else:
        write_jsonl(tmp_path / name, [{"text": t, **({"label": lab} if lab else {})} for t, lab in rows])
    line = train_error(capsys, f"train_file={name}")
    row_line = 4 if name.endswith(".csv") else 3  # CSV has a header line, JSONL does not
    assert f"{name}, line {row_line}:" in line and "column 'label'" in line and "empty" in line


def test_text_without_label_in_json_records_names_the_row(capsys, tmp_path):
    (tmp_path / "train.json").write_text(json.dumps(
        [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}, {"text": "c", "label": None}]))
    line = train_error(capsys, "train_file=train.json")
    assert "train.json, row 3:" in line and "'label'" in line


def test_mixed_int_and_string_labels(capsys, tmp_path):
    write_csv(tmp_path / "train.csv", [["one", "0"], ["two", "1"], ["three", "positive"], ["four", "1"]])
    line = train_error(capsys, "train_file=train.csv")
    assert "mixes integer and text labels" in line
    assert "'0'" in line and "train.csv, line 2" in line
    assert "'positive'" in line and "train.csv, line 4" in line


def test_mixed_label_types_across_files(capsys, tmp_path):
    write_csv(tmp_path / "train.csv", good_rows())
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "a", "label": "neg"}, {"text": "b", "label": 1}])
    line = train_error(capsys, "train_file=train.csv", "validation_file=dev.jsonl")
    assert "mixes integer and text labels" in line and "dev.jsonl, line 2" in line


def test_non_integral_numeric_label(capsys, tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 0.5}])
    line = train_error(capsys, "train_file=train.jsonl")
    assert "train.jsonl, line 2:" in line and "0.5" in line and "regression" in line


def test_validation_label_unseen_in_training(capsys, tmp_path):
    write_csv(tmp_path / "train.csv", good_rows())
    write_csv(tmp_path / "dev.csv", [["fine", "neg"], ["also fine", "pos"], ["odd one", "neutral"]])
    line = train_error(capsys, "train_file=train.csv", "validation_file=dev.csv")
    assert "dev.csv, line 4:" in line and "'neutral'" in line and "never appears in training" in line
    assert "neg, pos" in line


def test_test_label_unseen_in_training(capsys, tmp_path):
    write_csv(tmp_path / "train.csv", good_rows())
    write_csv(tmp_path / "test.csv", [["odd one", "neutral"]])
    line = train_error(capsys, "train_file=train.csv", "test_file=test.csv")
    assert "test.csv, line 2:" in line and "'neutral'" in line


def test_single_class(capsys, tmp_path):
    write_csv(tmp_path / "train.csv", good_rows(labels=("only",)))
    line = train_error(capsys, "train_file=train.csv")
    assert "train.csv" in line and "single class" in line and "'only'" in line and "at least two" in line


def test_text_that_is_not_a_string(capsys, tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"text": 42, "label": "y"}])
    line = train_error(capsys, "train_file=train.jsonl")
    assert "train.jsonl, line 2:" in line and "column 'text'" in line and "int" in line


def test_every_row_empty(capsys, tmp_path):
    write_csv(tmp_path / "train.csv", [["", "x"], ["  ", "y"]])
    line = train_error(capsys, "train_file=train.csv")
    assert "train.csv" in line and "every row has empty text" in line


def test_too_few_rows_to_hold_out_validation(capsys, tmp_path):
    write_csv(tmp_path / "train.csv", [["a", "x"], ["b", "y"]])
    line = train_error(capsys, "train_file=train.csv")
    assert "train.csv" in line and "too few" in line and "validation_file" in line


# ---- errors: output_dir ---------------------------------------------------------------------------------

def _finished_run(path: Path) -> Path:
    path.mkdir()
    (path / "run.json").write_text(json.dumps({"id": path.name, "status": "finished"}))
    return path


def test_output_dir_with_a_finished_run_cli(capsys, tmp_path):
    write_csv(tmp_path / "train.csv", good_rows())
    _finished_run(tmp_path / "run1")
    line = train_error(capsys, "train_file=train.csv", "output_dir=run1")
    assert "training.output_dir" in line and "run1" in line and "status finished" in line
    assert "resume_from_checkpoint" in line


def test_output_dir_checks_via_prepare_output_dir(tmp_path):
    _finished_run(tmp_path / "done")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    cases = {"done": "a run (status finished)", "a_file": "is a file", "other": "holds files"}
    for folder, expected in cases.items():
        cfg = load_config(None, BASE + ["train_file=train.csv", f"output_dir={folder}"])
        with pytest.raises(UserError) as info:
            prepare_output_dir(cfg)
        assert expected in str(info.value) and "\n" not in str(info.value)
    fresh = load_config(None, BASE + ["train_file=train.csv", "output_dir=new_run"])
    assert prepare_output_dir(fresh) == Path("new_run")
    resume = load_config(None, BASE + ["train_file=train.csv", "output_dir=done", "resume_from_checkpoint=auto"])
    assert prepare_output_dir(resume) == Path("done")


def test_data_errors_are_user_errors():
    assert issubclass(DataError, UserError) and DataError.exit_code == 2


# ---- prepare_data: cleaning and warnings -----------------------------------------------------------------

def test_empty_text_rows_are_dropped_and_located(tmp_path):
    rows = good_rows() + [["", "neg"], ["   ", "pos"]]
    write_csv(tmp_path / "train.csv", rows[:3] + [rows[-2]] + rows[3:-2] + [rows[-1]])
    # the empty rows are on file lines 5 and 15 (header is line 1)
    data = prepare("train_file=train.csv", "validation_split_percentage=20")
    split = data.report.splits["train"]
    assert split.rows_read == 14 and split.dropped_empty == 2
    assert split.dropped_empty_where == "line 5, line 15"
    assert all(t.strip() for table in data.splits.values() for t in table.columns["text"])


def test_null_text_in_jsonl_is_dropped(tmp_path):
    records = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(10)]
    records.insert(2, {"text": None, "label": "a"})
    records.insert(5, {"label": "b"})  # no text key at all
    write_jsonl(tmp_path / "train.jsonl", records)
    data = prepare("train_file=train.jsonl", "validation_split_percentage=20")
    split = data.report.splits["train"]
    assert split.dropped_empty == 2 and split.dropped_empty_where == "line 3, line 6"


def test_exact_duplicates_are_dropped_and_counted(tmp_path):
    rows = good_rows(5)
    write_csv(tmp_path / "train.csv", rows + rows[:3])
    data = prepare("train_file=train.csv", "validation_split_percentage=20")
    report = data.report.splits["train"]
    assert report.dropped_duplicates == 3
    kept = data.splits["train"].columns["text"] + data.splits["validation"].columns["text"]
    assert sorted(kept) == sorted(r[0] for r in rows)


def test_same_text_different_labels_warns(tmp_path):
    write_csv(tmp_path / "train.csv", good_rows() + [["neg example number 0", "pos"]])
    data = prepare("train_file=train.csv", "validation_split_percentage=20")
    assert data.report.splits["train"].dropped_duplicates == 0  # not an exact duplicate
    warning = next(w for w in data.report.warnings if "different labels" in w)
    assert "train.csv" in warning and "neg example number 0" in warning and "line 2" in warning
    assert "neg, pos" in warning


def test_train_validation_overlap_warns(tmp_path):
    write_csv(tmp_path / "train.csv", good_rows())
    write_csv(tmp_path / "dev.csv", [["brand new", "neg"], ["pos example number 3", "pos"]])
    data = prepare("train_file=train.csv", "validation_file=dev.csv")
    warning = next(w for w in data.report.warnings if "also appear in training" in w)
    assert "1 of 2" in warning and "dev.csv" in warning and "line 3" in warning


def test_no_warnings_on_clean_data(tmp_path):
    write_csv(tmp_path / "train.csv", good_rows())
    write_csv(tmp_path / "dev.csv", [["brand new", "neg"], ["another new", "pos"]])
    data = prepare("train_file=train.csv", "validation_file=dev.csv")
    assert data.report.warnings == []
    assert data.report.splits["validation"].rows_kept == 2
    assert data.report.splits["train"].held_out == 0


# ---- prepare_data: validation split ----------------------------------------------------------------------

def test_stratified_split_preserves_proportions(tmp_path):
    sizes = {"a": 30, "b": 20, "c": 10}
    rows = [[f"{label} text {i}", label] for label, n in sizes.items() for i in range(n)]
    write_csv(tmp_path / "train.csv", rows)
    data = prepare("train_file=train.csv", "validation_split_percentage=20")
    train, val = data.splits["train"], data.splits["validation"]
    val_counts = Counter(val.columns["label"])
    for label, n in sizes.items():
        assert abs(val_counts[label] - n * 0.2) <= 1, val_counts
    assert len(train) + len(val) == 60
    assert not set(train.columns["text"]) & set(val.columns["text"])
    assert data.report.splits["train"].held_out == len(val)
    assert data.report.splits["validation"].label_counts == dict(val_counts)
    assert data.report.splits["train"].label_counts == {k: n - val_counts[k] for k, n in sizes.items()}
    assert "20% held out" in data.report.splits["validation"].source


def test_stratified_split_is_reproducible_and_seeded(tmp_path):
    write_csv(tmp_path / "train.csv", [[f"t{i}", "ab"[i % 2]] for i in range(40)])
    first = prepare("train_file=train.csv", "seed=1").splits["validation"].columns["text"]
    again = prepare("train_file=train.csv", "seed=1").splits["validation"].columns["text"]
    other = prepare("train_file=train.csv", "seed=2").splits["validation"].columns["text"]
    assert first == again and first != other


def test_single_example_class_stays_in_training_with_warning(tmp_path):
    write_csv(tmp_path / "train.csv", good_rows(10) + [["the lonely one", "rare"]])
    data = prepare("train_file=train.csv", "validation_split_percentage=20")
    assert "the lonely one" in data.splits["train"].columns["text"]
    assert data.report.splits["validation"].label_counts["rare"] == 0
    assert data.report.splits["train"].label_counts["rare"] == 1
    assert any("'rare'" in w and "kept in training" in w for w in data.report.warnings)
    assert data.label_names == ["neg", "pos", "rare"]


# ---- prepare_data: labels ------------------------------------------------------------------------------

def test_string_labels_are_sorted(tmp_path):
    write_csv(tmp_path / "train.csv", good_rows(4, labels=("positive", "negative", "neutral")))
    data = prepare("train_file=train.csv", "validation_split_percentage=25")
    assert data.label_names == ["negative", "neutral", "positive"]


def test_integer_labels_from_csv(tmp_path):
    write_csv(tmp_path / "train.csv", good_rows(4, labels=("2", "0", "1")))
    data = prepare("train_file=train.csv", "validation_split_percentage=25")
    assert data.label_names == ["0", "1", "2"]
    assert set(data.splits["train"].columns["label"]) == {"0", "1", "2"}


def test_integer_labels_sort_numerically(tmp_path):
    write_jsonl(tmp_path / "train.jsonl",
                [{"text": f"t{label}-{i}", "label": label} for label in (10, 2, 1) for i in range(4)])
    data = prepare("train_file=train.jsonl", "validation_split_percentage=25")
    assert data.label_names == ["1", "2", "10"]


def test_int_and_integral_float_labels_agree(tmp_path):
    write_csv(tmp_path / "train.csv", good_rows(4, labels=("0", "1")))
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "x", "label": 1.0}, {"text": "y", "label": 0}])
    data = prepare("train_file=train.csv", "validation_file=dev.jsonl")
    assert data.label_names == ["0", "1"]
    assert data.splits["validation"].columns["label"] == ["1", "0"]


# ---- prepare_data: formats -----------------------------------------------------------------------------

RECORDS = [{"text": f"{label} text {i}", "label": label} for label in ("neg", "pos") for i in range(5)]


def _check_records(data, dropped=0):
    assert data.label_names == ["neg", "pos"]
    report = data.report.splits["train"]
    assert report.rows_read == len(RECORDS) + dropped and report.dropped_empty == dropped
    assert report.rows_kept + data.report.splits["validation"].rows_kept == len(RECORDS)
    texts = list(data.splits["train"].columns["text"]) + list(data.splits["validation"].columns["text"])
    assert sorted(texts) == sorted(r["text"] for r in RECORDS)


def test_reads_tsv(tmp_path):
    write_csv(tmp_path / "train.tsv", [[r["text"], r["label"]] for r in RECORDS], delimiter="\t")
    _check_records(prepare("train_file=train.tsv", "validation_split_percentage=20"))


def test_reads_csv_with_commas_quotes_and_bom(tmp_path):
    path = write_csv(tmp_path / "train.csv", [["hello, \"world\"", "neg"]] + [[r["text"], r["label"]]
                                                                             for r in RECORDS])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    data = prepare("train_file=train.csv", "validation_split_percentage=20")
    texts = list(data.splits["train"].columns["text"]) + list(data.splits["validation"].columns["text"])
    assert 'hello, "world"' in texts


def test_reads_json_list_of_records(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps(RECORDS, indent=2))
    _check_records(prepare("train_file=train.json", "validation_split_percentage=20"))


def test_reads_json_dict_of_columns_and_wrapped_records(tmp_path):
    (tmp_path / "cols.json").write_text(json.dumps({"text": [r["text"] for r in RECORDS],
                                                    "label": [r["label"] for r in RECORDS]}))
    _check_records(prepare("train_file=cols.json", "validation_split_percentage=20"))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": RECORDS}))
    _check_records(prepare("train_file=wrapped.json", "validation_split_percentage=20"))


def test_reads_jsonl(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", RECORDS)
    _check_records(prepare("train_file=train.jsonl", "validation_split_percentage=20"))


def test_reads_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(RECORDS + [{"text": None, "label": "neg"}]), tmp_path / "train.parquet")
    data = prepare("train_file=train.parquet", "validation_split_percentage=20")
    assert data.report.splits["train"].dropped_empty == 1
    assert data.report.splits["train"].dropped_empty_where == "row 11"  # no lines in Parquet: rows
    _check_records(data, dropped=1)


def test_reads_parquet_int_labels(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [f"t{i}" for i in range(10)], "label": [i % 2 for i in range(10)]}),
                   tmp_path / "train.parquet")
    assert prepare("train_file=train.parquet", "validation_split_percentage=20").label_names == ["0", "1"]


def test_sentence_pairs(tmp_path):
    rows = [[f"premise {i}", f"hypothesis {i}", "entailment" if i % 2 else "contradiction"] for i in range(10)]
    rows.append(["premise 0", "hypothesis 0", "contradiction"])   # exact duplicate (both texts + label)
    rows.append(["premise 0", "another hypothesis", "entailment"])  # same premise, new pair: kept
    rows.append(["premise x", "", "entailment"])                   # empty pair text: dropped
    write_csv(tmp_path / "train.csv", rows, header=("premise", "hypothesis", "label"))
    data = prepare("train_file=train.csv", "text_column=premise", "text_pair_column=hypothesis",
                   "validation_split_percentage=20")
    report = data.report.splits["train"]
    assert report.dropped_duplicates == 1
    assert report.dropped_empty == 1 and report.dropped_empty_where == "line 14"
    assert data.label_names == ["contradiction", "entailment"]
    pairs = set()
    for table in data.splits.values():
        pairs |= set(zip(table.columns["premise"], table.columns["hypothesis"]))
    assert len(pairs) == 11 and ("premise 0", "another hypothesis") in pairs
    assert not [w for w in data.report.warnings if "different labels" in w]


def test_custom_column_names_and_extra_columns(tmp_path):
    write_csv(tmp_path / "train.csv", [[i, f"review {i}", "ab"[i % 2]] for i in range(10)],
              header=("id", "review", "stars"))
    data = prepare("train_file=train.csv", "text_column=review", "label_column=stars",
                   "validation_split_percentage=20")
    assert data.label_names == ["a", "b"]
    assert len(data.splits["train"]) + len(data.splits["validation"]) == 10


def test_max_train_and_eval_samples(tmp_path):
    write_csv(tmp_path / "train.csv", [[f"t{i}", "ab"[i % 2]] for i in range(40)])
    data = prepare("train_file=train.csv", "max_train_samples=5", "max_eval_samples=2")
    assert len(data.splits["train"]) == 5 and len(data.splits["validation"]) == 2
    assert data.report.splits["train"].rows_kept == 5


def test_fingerprint_follows_the_data(tmp_path):
    write_csv(tmp_path / "a.csv", good_rows())
    write_csv(tmp_path / "b.csv", good_rows() + [["one more", "pos"]])
    a1 = prepare("train_file=a.csv").fingerprint
    assert a1 and a1 == prepare("train_file=a.csv").fingerprint
    assert a1 != prepare("train_file=b.csv").fingerprint
