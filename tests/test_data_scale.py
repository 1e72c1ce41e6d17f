"""The data path for corpora larger than memory (issue 21): .txt rows stay on disk, checks compare digests,
token arrays are memory-mapped, packing is computed per batch. Each is checked against the in-memory path
it replaces: same rows, same blocks, same batches, same data report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import LM_CORPUS, one_line_error

from tuneforge.config import load_config
from tuneforge.data.batching import batch_order
from tuneforge.data.cache import cached_tokenize, open_entry
from tuneforge.data.columns import FileColumn, scan_text_file, text_digests
from tuneforge.data.packing import pack_documents, packed_batch, packed_split
from tuneforge.data.prepared import TokenizedSplit
from tuneforge.data.readers import read_file
from tuneforge.errors import DataError
from tuneforge.tasks import get_task


def _old_text_rows(text: str, documents: str) -> list[str]:
    """What the reader returned before rows stayed on disk (lines split at \\n)."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if documents == "line":
        return [line for line in lines if line.strip()]
    docs, current = [], []
    for line in lines + [""]:
        if line.strip():
            current.append(line)
        elif current:
            docs.append("\n".join(current))
            current = []
    return docs


@pytest.mark.parametrize("documents", ["line", "blank_line"])
def test_scanned_rows_equal_the_text_and_the_lines(tmp_path, documents, monkeypatch):
    import tuneforge.data.columns as columns

    monkeypatch.setattr(columns, "SCAN_CHUNK", 64)  # many chunk edges, lines longer than a chunk
    monkeypatch.setattr(columns, "ITER_CHUNK", 50)
    text = ("\ufeffcafé au lait\r\n\nsecond\nthird line with more words than one chunk holds, "
            + "x" * 150 + "\n  \n\n" + "\n".join(f"row {i} ünïcode" for i in range(40)) + "\nlast without newline")
    path = tmp_path / "c.txt"
    path.write_bytes(text.encode())
    table = read_file(path, documents=documents)
    expected = _old_text_rows(text.removeprefix("\ufeff"), documents)
    column = table.columns["text"]
    assert isinstance(column, FileColumn)
    assert list(column) == expected and [column[i] for i in range(len(column))] == expected
    assert column[-1] == expected[-1] and column[1:3] == expected[1:3]
    assert text_digests(column).tolist() == text_digests(expected).tolist()  # same digests as in memory
    first = table.lines[0]
    assert first == 1 and table.where(1) == f"{path}, line {3}"
    picked = table.select(np.array([2, 0]))
    assert list(picked.columns["text"]) == [expected[2], expected[0]] and picked.lines.tolist()[1] == 1


def test_invalid_utf8_in_a_scanned_file_names_the_line(tmp_path, monkeypatch):
    import tuneforge.data.columns as columns

    monkeypatch.setattr(columns, "SCAN_CHUNK", 16)
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nalso fine\nthird\n\xff broken\n")
    with pytest.raises(DataError, match=r"bad.txt: line 4: not valid UTF-8 \(byte 0xff\)"):
        scan_text_file(path, "line")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    with pytest.raises(DataError, match="the file is empty"):
        read_file(empty)


def test_lazy_packing_equals_materialised_blocks():
    rng = np.random.default_rng(0)
    for trial in range(20):
        docs = [list(rng.integers(3, 50, rng.integers(1, 40))) + [2] for _ in range(rng.integers(1, 12))]
        labels = [[x if rng.random() > 0.3 else -100 for x in d] for d in docs] if trial % 2 else None
        split = TokenizedSplit.from_lists(docs)
        if labels is not None:
            split.token_labels = np.array([x for r in labels for x in r], dtype=np.int64)
        for block in (1, 4, 7, 64):
            want = pack_documents(split, block, pad_id=0)
            lazy = packed_split(split, block)
            assert len(lazy) == len(want)
            order = rng.permutation(len(lazy))
            ids, lab, pos = packed_batch(lazy, order, pad_id=0)
            assert (ids == want.input_ids[order]).all() and (lab == want.labels[order]).all()
            assert (pos == want.positions[order]).all()
            assert (lazy.lengths == block).all()  # every block one length: batches are ordered as before
            assert [b.tolist() for b in batch_order(lazy.lengths, 3, 1, 0)] == \
                [b.tolist() for b in batch_order(np.full(len(want), block), 3, 1, 0)]


def test_cache_entries_are_memory_maps_that_reload(tmp_path):
    calls = []

    def build(writer):
        calls.append(1)
        writer.add([[1, 2, 3], [4]], full_lengths=[3, 9])
        writer.add([[5, 6]], full_lengths=[2])

    first = cached_tokenize(tmp_path, {"k": 1}, build)
    again = cached_tokenize(tmp_path, {"k": 1}, build)
    assert calls == [1]  # the second call read the entry
    assert isinstance(again.input_ids, np.memmap) and not again.input_ids.flags.writeable
    for split in (first, again):
        assert [split.row(i).tolist() for i in range(len(split))] == [[1, 2, 3], [4], [5, 6]]
        assert split.full_lengths.tolist() == [3, 9, 2]
    entry = next(p for p in tmp_path.iterdir() if p.is_dir())
    (entry / "input_ids.bin").write_bytes(b"\x00" * 3)  # truncated: rebuilt, not misread
    rebuilt = cached_tokenize(tmp_path, {"k": 1}, build)
    assert calls == [1, 1] and rebuilt.row(0).tolist() == [1, 2, 3]
    assert open_entry(entry).row(2).tolist() == [5, 6]


def _lm_run_data(model, train, tmp_path, **extra):
    from transformers import AutoTokenizer

    overrides = {"task": "causal_lm", "model": {"model_name_or_path": str(model)},
                 "data": {"train_file": str(train), "block_size": 16, "document_separator": "line",
                          "preprocessing_cache_dir": str(tmp_path / "cache"), **extra},
                 "training": {"output_dir": str(tmp_path / "out")}}
    task = get_task("causal_lm")
    cfg = load_config(None, overrides)
    data = task.prepare_data(cfg)
    tok = AutoTokenizer.from_pretrained(model)
    tok.pad_token = tok.pad_token or tok.eos_token
    return task, cfg, data, tok, task.tokenize(tok, data, cfg, 16)


def test_text_file_on_disk_gives_the_same_blocks_batches_and_report_as_the_same_rows_in_memory(tiny_gpt2_lm,
                                                                                                 tmp_path):
    """The .txt path (rows on disk, digests, mapped tokens, lazy packing) against the same rows read into memory
    from JSON Lines, tokenized in one call and packed by pack_documents: identical in every respect."""
    rows = [f"{i} {t}" for i in range(4) for t in LM_CORPUS] + [LM_CORPUS[0]] * 2  # with duplicates
    txt = tmp_path / "corpus.txt"
    txt.write_text("\n".join(rows) + "\n")
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    task, _, on_disk, tok, disk_splits = _lm_run_data(tiny_gpt2_lm, txt, tmp_path)
    _, _, in_memory, _, memory_splits = _lm_run_data(tiny_gpt2_lm, jsonl, tmp_path / "m")
    assert isinstance(on_disk.splits["train"].columns["text"], FileColumn)
    assert isinstance(in_memory.splits["train"].columns["text"], list)
    disk_report, memory_report = on_disk.report.to_dict(), in_memory.report.to_dict()
    for report in (disk_report, memory_report):
        for split in report["splits"].values():
            split["source"] = split["source"].replace(".jsonl", ".txt")
    assert disk_report == memory_report and disk_report["splits"]["train"]["dropped_duplicates"] == 1
    assert on_disk.fingerprint == in_memory.fingerprint
    eos = tok.eos_token_id
    for name in ("train", "validation"):
        texts = list(in_memory.splits[name].columns["text"])
        docs = TokenizedSplit.from_lists([ids + [eos] for ids in tok(texts)["input_ids"]])
        want = pack_documents(docs, 16, tok.pad_token_id)
        for split in (disk_splits[name], memory_splits[name]):
            batch = task.collate(split, np.arange(len(split)), tok.pad_token_id)
            assert (batch["input_ids"].numpy() == want.input_ids).all()
            assert (batch["labels"].numpy() == want.labels).all()
            assert (batch["position_ids"].numpy() == want.positions).all()
            assert isinstance(split.input_ids, np.memmap)


def test_automatic_validation_split_is_capped_and_says_so(tiny_gpt2_lm, tmp_path):
    txt = tmp_path / "corpus.txt"
    txt.write_text("\n".join(f"{i} {t}" for i in range(40) for t in LM_CORPUS) + "\n")
    _, _, data, _, _ = _lm_run_data(tiny_gpt2_lm, txt, tmp_path, validation_split_max_rows=7)
    assert data.report.splits["validation"].rows_kept == 7
    rendered = data.report.render()
    assert "capped at data.validation_split_max_rows=7" in rendered
    _, _, uncapped, _, _ = _lm_run_data(tiny_gpt2_lm, txt, tmp_path / "u", validation_split_max_rows=None)
    assert uncapped.report.splits["validation"].rows_kept == round(0.1 * 40 * len(LM_CORPUS))


def test_bad_cap_is_one_clear_line(tmp_path, capsys):
    line = one_line_error(capsys, ["train", "task=causal_lm", f"train_file={tmp_path / 'x.txt'}",
                                   "validation_split_max_rows=0"])
    assert "data.validation_split_max_rows: must be a positive number of rows, got 0" in line


def test_an_untrained_base_model_is_found_on_a_probe_not_a_full_pass(tiny_gpt2_lm, tmp_path, monkeypatch):
    """The base-model baseline scores the first rows first: a model trained from scratch (the tiny fixture,
    random init) is found there, and the held-out split is not evaluated in full before training starts."""
    import tuneforge
    import tuneforge.engine.evaluation as evaluation
    from tuneforge.engine.session import BASELINE_PROBE_ROWS

    seen = []
    real = evaluation.evaluate

    def spy(model, tokenizer, task, split, *args, **kwargs):
        seen.append(len(split))
        return real(model, tokenizer, task, split, *args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", spy)
    txt = tmp_path / "corpus.txt"
    txt.write_text("\n".join(f"{i} {t}" for i in range(30) for t in LM_CORPUS) + "\n")
    run = tuneforge.train(None, {"task": "causal_lm", "model": {"model_name_or_path": str(tiny_gpt2_lm)},
                                 "data": {"train_file": str(txt), "validation_file": str(txt), "block_size": 16,
                                          "document_separator": "line"},
                                 "training": {"output_dir": str(tmp_path / "run"), "max_steps": 1,
                                              "report_to": "none"}})
    assert seen[0] == BASELINE_PROBE_ROWS < seen[1]  # the probe, then the evaluation after training
    assert "base_model" not in json.loads((run.path / "metrics.json").read_text()).get("baselines", {})


def _classification_data(model, folder, name):
    """(prepared data, tokenized splits) of classification on folder/name, cached in its own folder."""
    from transformers import AutoTokenizer

    task = get_task("classification")
    cfg = load_config(None, {"task": "classification", "model": {"model_name_or_path": str(model)},
                             "data": {"train_file": str(folder / name),
                                      "preprocessing_cache_dir": str(folder / f"cache-{name}")},
                             "training": {"output_dir": str(folder / "out")}})
    data = task.prepare_data(cfg)
    return data, task.tokenize(AutoTokenizer.from_pretrained(model), data, cfg, 32)


def test_parquet_text_stays_in_arrow_and_prepares_like_the_same_csv(tiny_bert, tmp_path):
    """Parquet text columns are ArrowColumns (no Python string a row); the classification data path gives the
    same report, fingerprint and token arrays as the same rows read from CSV."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from conftest import toy_rows, write_csv

    from tuneforge.data.columns import ArrowColumn

    rows = toy_rows(60, 3) + toy_rows(5, 3)  # the repeated rows are duplicates
    write_csv(tmp_path / "train.csv", rows)
    pq.write_table(pa.table({"text": [t for t, _ in rows], "label": [lab for _, lab in rows]}),
                   tmp_path / "train.parquet")
    (csv_data, csv_splits), (pq_data, pq_splits) = (_classification_data(tiny_bert, tmp_path, f"train.{ext}")
                                                    for ext in ("csv", "parquet"))
    assert isinstance(pq_data.splits["train"].columns["text"], ArrowColumn)
    assert csv_data.fingerprint == pq_data.fingerprint and csv_data.label_names == pq_data.label_names
    reports = [d.report.to_dict() for d in (csv_data, pq_data)]
    for report in reports:
        for split in report["splits"].values():
            split["source"] = split["source"].replace(".parquet", ".csv")
    assert reports[0] == reports[1] and reports[0]["splits"]["train"]["dropped_duplicates"] == 5
    for name in ("train", "validation"):
        a, b = csv_splits[name], pq_splits[name]
        assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.offsets, b.offsets)
        assert np.array_equal(a.labels, b.labels)


def test_jsonl_long_text_stays_in_the_file_and_prepares_like_the_same_json(tiny_bert, tmp_path, monkeypatch):
    """JSON Lines: long-text fields become JsonFields (chosen after the first LAZY_SAMPLE rows), labels lists;
    empty and null texts are dropped and counted, and the prepared data and tokens equal those of the same
    records read from a .json file into memory."""
    from conftest import toy_rows

    import tuneforge.data.columns as columns
    import tuneforge.data.records as record_files

    monkeypatch.setattr(record_files, "LAZY_SAMPLE", 7)
    records = [{"text": f"{t} and a longer tail that makes every text over sixty-four characters", "label": lab}
               for t, lab in toy_rows(60, 5)]
    records[3]["text"], records[20]["text"] = None, "   "  # before and after the switch: dropped, counted
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "train.json").write_text(json.dumps({k: [r[k] for r in records] for k in ("text", "label")}))
    (tmp_path / "array.json").write_text(json.dumps(records, indent=1))  # an array: scanned, 4 lines a record
    (lazy, lazy_splits), (eager, eager_splits), (array, array_splits) = (
        _classification_data(tiny_bert, tmp_path, name) for name in ("train.jsonl", "train.json", "array.json"))
    assert isinstance(lazy.splits["train"].columns["text"], columns.JsonField)
    assert isinstance(array.splits["train"].columns["text"], columns.JsonField)
    assert array.report.splits["train"].dropped_empty_where == "line 14, line 82"  # 2 + 4 x (row - 1)
    assert array.fingerprint == lazy.fingerprint
    for name in ("train", "validation"):
        assert np.array_equal(array_splits[name].input_ids, eager_splits[name].input_ids)
    assert isinstance(lazy.splits["train"].columns["label"], list)
    assert lazy.report.splits["train"].dropped_empty == 2 == eager.report.splits["train"].dropped_empty
    assert lazy.report.splits["train"].dropped_empty_where == "line 4, line 21"
    assert lazy.fingerprint == eager.fingerprint
    assert list(lazy.splits["validation"].columns["text"]) == list(eager.splits["validation"].columns["text"])
    for name in ("train", "validation"):
        assert np.array_equal(lazy_splits[name].input_ids, eager_splits[name].input_ids)
        assert np.array_equal(lazy_splits[name].labels, eager_splits[name].labels)


def test_jsonl_number_in_a_long_text_field_names_its_line(tmp_path, capsys, monkeypatch):
    import tuneforge.data.records as records

    monkeypatch.setattr(records, "LAZY_SAMPLE", 3)
    rows = [{"text": "x" * 80 + str(i), "label": "a" if i % 2 else "b"} for i in range(10)]
    rows[6]["text"] = 12345
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = one_line_error(capsys, ["train", "task=classification", f"train_file={tmp_path / 'train.jsonl'}",
                                   "model_name_or_path=m"])
    assert "train.jsonl, line 7: column 'text' holds int '12345', expected text" in line


def test_csv_long_text_stays_in_the_file_with_quoted_line_breaks(tiny_bert, tmp_path, monkeypatch):
    """CSV: long-text columns become CsvFields holding each record's byte span (quoted line breaks, CRLF and a
    byte-order mark included); labels are lists; rows, line numbers, drops and tokens equal the same records
    read into memory from JSON."""
    import csv as csv_module

    from conftest import toy_rows

    import tuneforge.data.records as records
    from tuneforge.data.columns import CsvField

    monkeypatch.setattr(records, "LAZY_SAMPLE", 5)
    rows = [{"text": f"{t}, with a comma and a tail long enough to stay in the file" + ("\nsecond line" if i % 7 == 0
            else ""), "label": lab} for i, (t, lab) in enumerate(toy_rows(50, 8))]
    rows[2]["text"], rows[30]["text"] = "", ""  # empty: dropped and counted, before and after the switch
    path = tmp_path / "train.csv"
    with open(path, "w", newline="", encoding="utf-8-sig") as fh:
        writer = csv_module.DictWriter(fh, ["text", "label"], lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "train.json").write_text(json.dumps([{**r, "text": r["text"] or None} for r in rows]))
    table = read_file(path)
    assert isinstance(table.columns["text"], CsvField) and isinstance(table.columns["label"], list)
    assert [table.columns["text"][i] for i in (0, 1, 2)] == [rows[0]["text"], rows[1]["text"], None]
    assert table.lines.tolist()[:3] == [2, 4, 5]  # row 0 spans lines 2-3 (a quoted line break)
    (lazy, lazy_splits), (eager, eager_splits) = (_classification_data(tiny_bert, tmp_path, name)
                                                  for name in ("train.csv", "train.json"))
    assert lazy.report.splits["train"].dropped_empty == 2 == eager.report.splits["train"].dropped_empty
    assert lazy.fingerprint == eager.fingerprint
    for name in ("train", "validation"):
        assert np.array_equal(lazy_splits[name].input_ids, eager_splits[name].input_ids)
        assert np.array_equal(lazy_splits[name].labels, eager_splits[name].labels)


def test_a_json_array_is_scanned_record_by_record_like_json_load(tmp_path, monkeypatch):
    """Strings holding brackets, braces, escaped quotes, backslashes, line breaks and non-ASCII text; nested
    values; pretty-printed and compact layouts: the scanned columns equal json.load's, each record's line is the
    line its '{' is on, and long texts stay in the file."""
    import tuneforge.data.records as record_files
    from tuneforge.data.columns import JsonField
    from tuneforge.data.records import scan_json_array

    monkeypatch.setattr(record_files, "LAZY_SAMPLE", 5)

    texts = ['plain', 'brackets ] [ and } { inside', 'a \\"quoted\\" word and a \\ backslash \\\\',
             'line\nbreaks\r\nand tabs\t', 'non-ASCII: é ü 日本語 \u2028 emoji 🎉', '"', '\\']
    records = [{"text": t * 12, "label": i % 3, "meta": {"tags": ["a", "]"], "n": None}} for i, t in
               enumerate(texts * 3)]
    for indent in (None, 2):
        path = tmp_path / f"a{indent}.json"
        path.write_text("\ufeff" + json.dumps(records, indent=indent, ensure_ascii=indent is None) + "\n",
                        encoding="utf-8")
        columns, lines = scan_json_array(path)
        assert isinstance(columns["text"], JsonField)
        assert list(columns["text"]) == [r["text"] for r in records]
        assert columns["label"] == [r["label"] for r in records] and columns["meta"] == [r["meta"] for r in records]
        if indent is None:  # one line: records are told apart by number ("row N")
            assert lines is None
            continue
        body = path.read_text(encoding="utf-8-sig").split("\n")  # not splitlines: U+2028 is no line end
        assert all(body[n - 1].lstrip().startswith("{") for n in lines)
        per_record = json.dumps(records[0], indent=2).count("\n") + 1
        assert len(lines) == len(records) and set(np.diff(lines)) == {per_record}


@pytest.mark.parametrize("content, expected", [
    ('[{"text": "a"}, {"text": "b"', "invalid JSON in the record starting on line 1"),
    ('[{"text": "a"},\n', "not closed"),
    ('[\n{"text": "a"},\n"just a string"\n]', "line 3: expected a JSON object"),
    ('[\n{"text": "a"},\n{"text": "b" "label": 1}\n]', "line 3: invalid JSON"),
    ('[{"text": "a"}] [{"text": "b"}]', "text after the closing ']'"),
    ('[{"text": "a"} {"text": "b"}]', "expected ',' or ']'"),
    ('[{"text": "a\\"}]', "Unterminated string"),
])
def test_a_broken_json_array_is_one_line_naming_where(tmp_path, capsys, content, expected):
    path = tmp_path / "train.json"
    path.write_text(content)
    line = one_line_error(capsys, ["train", "task=classification", f"train_file={path}", "model_name_or_path=m"])
    assert "train.json" in line and expected in line, line
