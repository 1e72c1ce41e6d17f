"""Held-out evaluation, error analysis, baselines and the model card, on the shared tiny classification run."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter

import numpy as np
import yaml
from conftest import NEUTRAL, one_line_error, toy_rows, write_csv

from tuneforge.cli import main
from tuneforge.evaluate.errors import ErrorCollector


def _csv_rows(path):
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_final_evaluation_on_test_split_has_error_analysis(trained_run, toy_data):
    analysis = json.loads((trained_run.path / "error_analysis.json").read_text())
    test = trained_run.metrics["test"]
    assert analysis["split"] == "test"
    assert analysis["per_class"] == test["per_class"]
    slices = analysis["length_slices"]
    assert sum(s["rows"] for s in slices) == len(_csv_rows(toy_data["test"]))
    # the per-length accuracies recombine to the overall test accuracy
    recombined = sum(s["rows"] * s["accuracy"] for s in slices) / sum(s["rows"] for s in slices)
    assert abs(recombined - test["accuracy"]) < 1e-9
    assert (trained_run.path / "error_analysis.md").read_text().startswith("# Error analysis")


def test_cli_evaluate_split_test_matches_the_end_of_training(trained_run, capsys):
    assert main(["evaluate", str(trained_run.path), "--split", "test"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((trained_run.path / "eval" / "test" / "metrics.json").read_text())
    assert abs(saved["accuracy"] - trained_run.metrics["test"]["accuracy"]) < 1e-9
    assert "accuracy" in out and str(trained_run.path / "eval" / "test") in out


def test_evaluate_needs_data_or_split(trained_run, capsys):
    line = one_line_error(capsys, ["evaluate", str(trained_run.path)])
    assert "--data FILE" in line and "--split test|validation" in line


def test_confident_errors_quote_the_right_rows(trained_run, tmp_path):
    """Flip every label: each prediction the model is sure of becomes a confident error at a known line."""
    rows = [(t, "neg" if y == "pos" else "pos") for t, y in toy_rows(40, 7)]
    flipped = write_csv(tmp_path / "flipped.csv", rows)
    assert main(["evaluate", str(trained_run.path), "--data", str(flipped), "--name", "flipped"]) == 0
    folder = trained_run.path / "eval" / "flipped"
    metrics = json.loads((folder / "metrics.json").read_text())
    analysis = json.loads((folder / "error_analysis.json").read_text())
    errors = analysis["most_confident_errors"]
    n_wrong = round((1 - metrics["accuracy"]) * len(rows))
    assert len(errors) == min(20, n_wrong) > 0
    confidences = [e["confidence"] for e in errors]
    assert confidences == sorted(confidences, reverse=True)
    for e in errors:
        line = int(e["where"].rsplit("line ", 1)[1])
        text, label = rows[line - 2]  # line 1 is the header
        assert e["text"] == text and e["label"] == label and e["predicted"] != label
    pairs = {(p["true"], p["predicted"]): p["count"] for p in analysis["confused_pairs"]}
    matrix = metrics["confusion_matrix"]
    assert pairs.get(("neg", "pos"), 0) == matrix[0][1] and pairs.get(("pos", "neg"), 0) == matrix[1][0]


def test_length_slices_separate_truncated_inputs(trained_run, tmp_path):
    """Rows longer than the model's 64 tokens land in their own '(truncated)' bucket."""
    rng = random.Random(3)
    short = toy_rows(30, 11)
    long = [(" ".join(rng.choice(NEUTRAL) for _ in range(90)) + " " + t, y) for t, y in toy_rows(10, 12)]
    data = write_csv(tmp_path / "mixed.csv", short + long)
    assert main(["evaluate", str(trained_run.path), "--data", str(data), "--name", "mixed"]) == 0
    slices = json.loads((trained_run.path / "eval" / "mixed" / "error_analysis.json").read_text())["length_slices"]
    truncated = [s for s in slices if s["truncated"]]
    assert len(truncated) == 1 and truncated[0]["rows"] == 10 and truncated[0]["min_tokens"] == 65
    assert sum(s["rows"] for s in slices) == 40


def test_collector_keeps_the_k_worst_and_weighted_bucket_means():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, size=500)
    c = ErrorCollector("loss", lengths, max_length=80, top_k=7, describe=lambda r: {"row": r})
    badness = rng.random(500)
    values, weights = rng.random(500), rng.integers(1, 5, size=500)
    for start in range(0, 500, 64):  # streamed in batches, as evaluation does
        rows = np.arange(start, min(start + 64, 500))
        c.add(rows, values[rows], badness[rows], weights=weights[rows])
    assert [w["row"] for w in c.worst()] == list(np.argsort(-badness)[:7])
    for s in c.slices():
        high = s["max_tokens"] if s["max_tokens"] is not None else 10**9
        mask = (lengths >= s["min_tokens"]) & (lengths <= high)
        assert s["rows"] == mask.sum()
        assert abs(s["loss"] - np.average(values[mask], weights=weights[mask])) < 1e-9


def test_majority_baseline_in_metrics(trained_run, toy_data):
    train = Counter(r["label"] for r in _csv_rows(toy_data["train"]))
    majority = train.most_common(1)[0][0]
    test = [r["label"] for r in _csv_rows(toy_data["test"])]
    baselines = trained_run.metrics["baselines"]
    assert baselines["split"] == "test"
    assert abs(baselines["majority_class"]["accuracy"] - test.count(majority) / len(test)) < 1e-9


def test_model_card_has_hf_metadata_results_and_no_training_text(trained_run, toy_data):
    text = (trained_run.path / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["pipeline_tag"] == "text-classification" and "tuneforge" in meta["tags"]
    assert meta["library_name"] == "transformers" and "base_model" not in meta  # a local folder is no hub id
    test_acc = trained_run.metrics["test"]["accuracy"]
    assert f"| accuracy | {trained_run.metrics['eval']['accuracy']:.4f} | {test_acc:.4f} |" in text
    assert "majority_class" in text and "learning_rate | 0.003 |" in text
    assert not any(r["text"] in text for r in _csv_rows(toy_data["train"]))


def test_tfidf_baseline_in_metrics_beats_majority_on_lexical_data(trained_run, toy_data):
    baselines = trained_run.metrics["baselines"]
    tfidf, majority = baselines["tfidf_logreg"], baselines["majority_class"]
    assert {"accuracy", "f1_macro", "f1_weighted"} <= set(tfidf)
    assert tfidf["train_rows"] == len(_csv_rows(toy_data["train"]))
    assert tfidf["accuracy"] > majority["accuracy"] and tfidf["seconds"] < 60


def test_tfidf_baseline_caps_rows_and_reads_unspaced_scripts():
    from tuneforge.evaluate.tfidf import tfidf_logreg, unspaced

    rng = random.Random(0)
    # "words" glued together without spaces: whitespace tokens would be whole sentences, never seen twice
    vocab = {0: ["退款", "付款", "发票"], 1: ["包裹", "快递", "送货"]}
    def sentence(label):
        return "".join(rng.choice(vocab[label]) + rng.choice(["了", "的", "吗"]) for _ in range(4))
    train_y = [rng.randint(0, 1) for _ in range(300)]
    train_x = [sentence(y) for y in train_y]
    test_y = [rng.randint(0, 1) for _ in range(100)]
    test_x = [sentence(y) for y in test_y]
    assert unspaced(train_x) and not unspaced(["the parcel never arrived"] * 3)
    m = tfidf_logreg(train_x, train_y, test_x, test_y, ["billing", "shipping"], max_rows=200)
    assert m["features"] == "word+char" and m["train_rows"] == 200
    assert m["accuracy"] > 0.9


def test_baselines_can_be_switched_off(toy_data):
    from tuneforge.config import load_config
    from tuneforge.evaluate.baselines import baselines
    from tuneforge.tasks import get_task

    cfg = load_config({"task": "classification", "model_name_or_path": "unused", "train_file": str(toy_data["train"]),
                       "test_file": str(toy_data["test"])})
    data = get_task(cfg.task).prepare_data(cfg)
    assert baselines(cfg.task, data, "test", cfg)
    off = load_config({"task": "classification", "model_name_or_path": "unused", "train_file": str(toy_data["train"]),
                       "test_file": str(toy_data["test"]), "baselines": False})
    assert baselines(off.task, data, "test", off) == {}
