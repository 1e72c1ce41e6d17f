"""Multi-label classification (issue 18 item 1): detection from label lists, one-line data errors, BCE training
that learns a toy problem, per-label thresholds tuned on validation, saved in config.json and used by predict,
exports (safetensors and ONNX) and the server."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import base_overrides, multilabel_rows, one_line_error, write_jsonl

import tuneforge
from tuneforge.config import load_config
from tuneforge.data.labels import MULTI_LABEL, SINGLE_LABEL, iterative_split
from tuneforge.errors import ConfigError, DataError
from tuneforge.evaluate.classification import tune_thresholds
from tuneforge.tasks import get_task


@pytest.fixture(scope="module")
def ml_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ml_data")
    return {"train": write_jsonl(folder / "train.jsonl", multilabel_rows(320, 1)),
            "test": write_jsonl(folder / "test.jsonl", multilabel_rows(80, 3))}


@pytest.fixture(scope="module")
def ml_run(small_bert, ml_data, tmp_path_factory):
    """small_bert for 16 epochs: tiny_bert for 8 at 5e-3 left praise/complaint at chance for 3 seeds of 6
    (micro-F1 0.61-0.68; 'story' learnt); small_bert for 16 at 2e-3 gave 0.81-1.0 over seeds 0-5."""
    out = tmp_path_factory.mktemp("ml_runs") / "run"
    return tuneforge.train(None, base_overrides(small_bert, {**ml_data, "validation": ml_data["train"]}, out,
                                                validation_file="null", test_file=str(ml_data["test"]),
                                                num_train_epochs=16, learning_rate=2e-3))


def _config(tmp_path, **extra):
    items = {"task": "classification", "model_name_or_path": "unused", "output_dir": str(tmp_path / "out"),
             "report_to": "none", **extra}
    return load_config(None, {k: str(v) if hasattr(v, "parts") else v for k, v in items.items()})


# ---- detection and data errors (no torch) ------------------------------------------------------------------------
def test_lists_in_jsonl_are_detected(ml_data, tmp_path):
    task = get_task("classification")
    data = task.prepare_data(_config(tmp_path, train_file=ml_data["train"]))
    assert data.info["problem_type"] == MULTI_LABEL
    assert data.info["problem_note"] == "labels are lists: multi-label"
    assert data.label_names == ["complaint", "praise", "story"]
    assert set(data.splits) == {"train", "validation"}  # held out by iterative stratification
    for split in data.splits.values():
        assert all(isinstance(row, tuple) for row in split.columns["label"])


def test_delimited_csv_reads_like_the_jsonl(tmp_path):
    rows = multilabel_rows(60, 5)
    jsonl = write_jsonl(tmp_path / "train.jsonl", rows)
    path = tmp_path / "train.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows((r["text"], "|".join(reversed(r["label"]))) for r in rows)  # order does not matter
    assert any(not r["label"] for r in rows)  # an empty cell: a row with none of the labels
    task = get_task("classification")
    from_csv = task.prepare_data(_config(tmp_path, train_file=path, label_delimiter="|", validation_file=path))
    from_jsonl = task.prepare_data(_config(tmp_path, train_file=jsonl, validation_file=jsonl))
    assert from_csv.info["problem_type"] == MULTI_LABEL and "label_delimiter" in from_csv.info["problem_note"]
    assert list(from_csv.splits["train"].columns["label"]) == list(from_jsonl.splits["train"].columns["label"])
    # without the delimiter the same CSV is single-label (strings are never split by guessing)
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("".join(line for line in path.read_text().splitlines(keepends=True) if
                                not line.rstrip("\r\n").endswith(",")))
    plain = task.prepare_data(_config(tmp_path, train_file=labelled, validation_file=labelled))
    assert plain.info["problem_type"] == SINGLE_LABEL and any("|" in name for name in plain.label_names)


def _train_error(capsys, tiny_bert, tmp_path, rows, name="train.jsonl", **extra):
    path = write_jsonl(tmp_path / name, rows)
    items = {"task": "classification", "model_name_or_path": str(tiny_bert), "train_file": str(path),
             "output_dir": str(tmp_path / "out"), "report_to": "none", **extra}
    return one_line_error(capsys, ["train", *[f"{k}={v}" for k, v in items.items()]])


def test_one_line_errors(capsys, tiny_bert, tmp_path):
    good = [{"text": f"text {i}", "label": ["a", "b"][: i % 3]} for i in range(20)]
    line = _train_error(capsys, tiny_bert, tmp_path, good[:5] + [{"text": "x", "label": "a"}] + good[5:])
    assert "mixes label lists and single labels" in line and "train.jsonl, line 1" in line and "line 6" in line
    line = _train_error(capsys, tiny_bert, tmp_path, good + [{"text": "y", "label": [["a"]]}])
    assert "train.jsonl, line 21" in line and "each label in the list must be a name" in line
    line = _train_error(capsys, tiny_bert, tmp_path, good + [{"text": "y", "label": None}])
    assert "line 21" in line and "[] for a row with none" in line
    line = _train_error(capsys, tiny_bert, tmp_path, good, problem_type="single_label_classification")
    assert "holds a list of labels but data.problem_type is single_label_classification" in line
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "z", "label": ["a", "zzz"]}])
    line = _train_error(capsys, tiny_bert, tmp_path, good, validation_file=str(val))
    assert "val.jsonl, line 1" in line and "'zzz'" in line and "never appears in training" in line
    line = _train_error(capsys, tiny_bert, tmp_path, good, metric_for_best_model="accuracy")
    assert line.startswith("error: training.metric_for_best_model: accuracy does not apply to multi_label")
    line = _train_error(capsys, tiny_bert, tmp_path, good, **{"training.class_weights": "{q: 2.0}"})
    assert "training.class_weights: unknown label 'q'" in line
    line = _train_error(capsys, tiny_bert, tmp_path, good, label_smoothing_factor="0.1")
    assert line.startswith("error: training.label_smoothing_factor: applies to single-label classification, not "
                           "multi_label")


def test_errors_are_raised_before_torch(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": ["x"]}, {"text": "b", "label": ["x"]}])
    with pytest.raises(DataError, match="1 distinct label"):
        get_task("classification").prepare_data(_config(tmp_path, train_file=path))
    with pytest.raises(ConfigError, match="label_delimiter"):
        get_task("classification").prepare_data(_config(tmp_path, train_file=path, label_delimiter="|",
                                                         problem_type="regression"))


# ---- split and thresholds (pure) ----------------------------------------------------------------------------------
def test_iterative_split_keeps_rare_labels_in_both_parts():
    rows = [["common"]] * 200 + [["common", "rare"]] * 3 + [["rare2"]] * 2 + [["single"]] + [[]] * 50
    train, val, warnings = iterative_split(rows, 10, 0)
    assert sorted(train + val) == list(range(len(rows))) and abs(len(val) - 26) <= 1
    for label in ("rare", "rare2", "common"):
        assert any(label in rows[i] for i in train) and any(label in rows[i] for i in val), label
    assert any(rows[i] == ["single"] for i in train) and "'single' has 1 example" in warnings[0]


def test_thresholds_are_tuned_per_label_with_a_floor():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 3)) < [0.3, 0.3, 0.005]).astype(float)
    scores = np.clip(0.25 * y[:, :1] + rng.normal(0.2, 0.05, (400, 1)), 0, 1)  # label 0: positives ~0.45
    scores = np.hstack([scores, np.clip(y[:, 1:2] * 0.5 + 0.3, 0, 1), rng.random((400, 1))])
    t = tune_thresholds(y, scores)
    assert 0.25 < t[0] < 0.45  # between the negatives (~0.2) and positives (~0.45), not 0.5
    assert t[1] == 0.5  # a plateau that includes 0.5 keeps it
    assert t[2] == 0.5 and y[:, 2].sum() < 5  # too few positives to tune: the floor rule keeps 0.5


# ---- a trained run ------------------------------------------------------------------------------------------------
def test_learns_the_toy_problem_and_saves_thresholds(ml_run):
    metrics = json.loads((ml_run.path / "metrics.json").read_text())
    log = [json.loads(line) for line in (ml_run.path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r and "eval_loss" not in r]
    assert losses[-1] < 0.7 * losses[0]
    test = metrics["test"]
    assert test["f1_micro"] > 0.75  # predicting every label scores 2 * 0.4 / 1.4 = 0.57
    assert metrics["metric_for_best_model"] == "f1_micro"
    assert set(test["per_label"]) == {"complaint", "praise", "story"}
    assert {"precision", "recall", "f1", "support", "threshold"} <= set(test["per_label"]["praise"])
    assert metrics["baselines"]["tfidf_ovr_logreg"]["f1_micro"] > 0.9
    config = json.loads((ml_run.path / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert set(config["label_thresholds"]) == {"complaint", "praise", "story"}
    # the saved thresholds are those tuned for the kept weights: the validation metrics' per-label thresholds
    assert config["label_thresholds"] == {k: v["threshold"] for k, v in metrics["eval"]["per_label"].items()}
    assert "problem_type: multi_label_classification" in (ml_run.path / "run_config.yaml").read_text()
    analysis = json.loads((ml_run.path / "error_analysis.json").read_text())
    assert analysis["metric"] == "f1_samples" and set(analysis["per_label"]) == set(config["label_thresholds"])
    assert "## Per label" in (ml_run.path / "error_analysis.md").read_text()


def _with_thresholds(run_path, tmp_path, thresholds):
    copy = tmp_path / "copy"
    shutil.copytree(run_path, copy)
    config = json.loads((copy / "config.json").read_text())
    config["label_thresholds"] = thresholds
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_predict_uses_the_saved_thresholds(ml_run, tmp_path):
    texts = ["the great film", "an awful story", "the movie", "a lovely plot was dreadful"]
    model = tuneforge.load(ml_run.path)
    rows = model.predict(texts)
    saved = json.loads((ml_run.path / "config.json").read_text())["label_thresholds"]
    for row in rows:
        assert set(row) == {"labels", "scores"}
        assert row["labels"] == [k for k, s in row["scores"].items() if s >= saved[k]]
    # the same weights with other thresholds: the sets follow the thresholds, the scores stay
    forced = tuneforge.load(_with_thresholds(ml_run.path, tmp_path, {"praise": 0.0, "complaint": 1.01,
                                                                     "story": 1.01})).predict(texts)
    assert [r["labels"] for r in forced] == [["praise"]] * len(texts)
    assert [r["scores"] for r in forced] == [r["scores"] for r in rows]


def test_export_and_serve_keep_the_thresholds(ml_run, tmp_path):
    httpx = pytest.importorskip("httpx")
    from conftest import serve_in_thread

    from tuneforge.deploy.export import export_run
    from tuneforge.deploy.serve import ServeSettings

    texts = ["the great film", "an awful story", "the movie", "a lovely plot"]
    odd = _with_thresholds(ml_run.path, tmp_path, {"praise": 0.0, "complaint": 1.01, "story": 0.0})
    (odd / "export").exists() and shutil.rmtree(odd / "export")
    expected = tuneforge.load(odd).predict(texts)
    formats = ["safetensors"] + (["onnx"] if all(__import__("importlib").util.find_spec(m) for m in
                                                 ("onnx", "onnxruntime", "onnxscript")) else [])
    for fmt in formats:
        report = export_run(odd, fmt, output=tmp_path / fmt, max_examples=16, latency_examples=1)
        assert report["passed"] and report["agreement"]["measure"].startswith("label-set agreement")
        assert json.loads((tmp_path / fmt / "config.json").read_text())["label_thresholds"]["complaint"] == 1.01
        got = tuneforge.load(tmp_path / fmt).predict(texts)
        assert [r["labels"] for r in got] == [r["labels"] for r in expected] == [["praise", "story"]] * 4
    with serve_in_thread(tuneforge.load(odd), ServeSettings()) as (url, _):
        body = httpx.post(f"{url}/v1/classify", json={"inputs": texts}, timeout=30).json()
        document = httpx.get(f"{url}/openapi.json").json()
    assert [r["labels"] for r in body["results"]] == [r["labels"] for r in expected]
    assert set(body["results"][0]) == {"labels", "scores"}
    assert "ClassifyLabels" in document["components"]["schemas"]


def test_evaluate_scores_at_the_saved_thresholds(ml_run, ml_data, capsys):
    from tuneforge.cli import main

    assert main(["evaluate", str(ml_run.path), "--data", str(ml_data["test"]), "--name", "again"]) == 0
    again = json.loads((ml_run.path / "eval" / "again" / "metrics.json").read_text())
    test = json.loads((ml_run.path / "metrics.json").read_text())["test"]
    assert again["f1_micro"] == pytest.approx(test["f1_micro"])  # the same thresholds, not re-tuned on test
    assert "per label" in capsys.readouterr().out


def test_thresholds_follow_the_restored_weights(tiny_bert):
    """The best checkpoint comes back through load_state_dict: its thresholds come back with it."""
    from transformers import AutoModelForSequenceClassification

    from tuneforge.tasks.multilabel import Tuning, weights_fingerprint

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2, id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1},
        problem_type="multi_label_classification")
    tuning = Tuning()
    tuning.attach(model)
    best = {k: v.clone() for k, v in model.state_dict().items()}
    tuning.remember(weights_fingerprint(model), [0.3, 0.7])
    with torch.no_grad():
        model.classifier.bias += 1.0
    model.config.label_thresholds = {"a": 0.5, "b": 0.5}  # what a later evaluation tuned for other weights
    model.load_state_dict(best)
    assert model.config.label_thresholds == {"a": 0.3, "b": 0.7}
