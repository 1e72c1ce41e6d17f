"""Regression (issue 18 item 2): problem_type regression set explicitly (never guessed), one-line errors for bad
targets, MSE on the standardised target, the scale folded into the saved head (plain transformers answers in
the target's units), regression metrics and baselines, export and serving."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import base_overrides, one_line_error, regression_rows, write_jsonl

import tuneforge
from tuneforge.config import load_config
from tuneforge.data.labels import REGRESSION
from tuneforge.tasks import get_task

TEXTS = ["the great film", "an awful movie", "a lovely superb film", "the movie was dreadful and lousy", "a film"]


@pytest.fixture(scope="module")
def reg_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reg_data")
    return {"train": write_jsonl(folder / "train.jsonl", regression_rows(320, 1)),
            "validation": write_jsonl(folder / "validation.jsonl", regression_rows(80, 2)),
            "test": write_jsonl(folder / "test.jsonl", regression_rows(80, 3))}


@pytest.fixture(scope="module")
def reg_run(tiny_bert, reg_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reg_runs") / "run"
    return tuneforge.train(None, base_overrides(tiny_bert, reg_data, out, test_file=str(reg_data["test"]),
                                                label_column="score", problem_type="regression",
                                                num_train_epochs=8, learning_rate=5e-3))


def _train_error(capsys, tiny_bert, tmp_path, rows, **extra):
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    items = {"task": "classification", "model_name_or_path": str(tiny_bert), "train_file": str(path),
             "output_dir": str(tmp_path / "out"), "report_to": "none", "label_column": "score", **extra}
    return one_line_error(capsys, ["train", *[f"{k}={v}" for k, v in items.items()]])


def test_one_line_errors(capsys, tiny_bert, tmp_path):
    good = [{"text": f"text {i}", "score": str(i / 3)} for i in range(20)]
    line = _train_error(capsys, tiny_bert, tmp_path, good + [{"text": "x", "score": "high"}],
                        problem_type="regression")
    assert "train.jsonl, line 21" in line and "'high', not a finite number" in line
    line = _train_error(capsys, tiny_bert, tmp_path, good + [{"text": "x", "score": None}],
                        problem_type="regression")
    assert "line 21" in line and "is empty" in line
    line = _train_error(capsys, tiny_bert, tmp_path, [{"text": f"t {i}", "score": 3} for i in range(9)],
                        problem_type="regression")
    assert "the same value (3) in every training row" in line
    line = _train_error(capsys, tiny_bert, tmp_path, good, problem_type="regression",
                        **{"training.class_weights": "{a: 2.0}"})
    assert "training.class_weights: label weights do not apply to regression" in line
    line = _train_error(capsys, tiny_bert, tmp_path, good, problem_type="regression",
                        metric_for_best_model="f1_macro")
    assert "f1_macro does not apply to regression" in line
    # never guessed: numbers that are not class ids are an error naming the fix, not a silent regression
    line = _train_error(capsys, tiny_bert, tmp_path, [{"text": f"text {i}", "score": i / 3} for i in range(20)])
    assert "line 2" in line and "0.333" in line and "data.problem_type=regression" in line


def test_numeric_strings_stay_classes_unless_configured(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": f"t {i}", "label": str(i % 3)} for i in range(30)])
    base = {"task": "classification", "model_name_or_path": "unused", "train_file": str(path)}
    task = get_task("classification")
    assert task.prepare_data(load_config(None, base)).label_names == ["0", "1", "2"]
    data = task.prepare_data(load_config(None, {**base, "problem_type": "regression"}))
    assert data.info["problem_type"] == REGRESSION and data.label_names == []
    assert data.info["target_mean"] == pytest.approx(1.0, abs=0.1)  # of the training rows (10% held out)


def test_learns_in_target_units_and_beats_the_mean(reg_run):
    metrics = json.loads((reg_run.path / "metrics.json").read_text())
    log = [json.loads(line) for line in (reg_run.path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r and "eval_loss" not in r]
    assert losses[-1] < 0.5 * losses[0]
    test, baselines = metrics["test"], metrics["baselines"]
    assert metrics["metric_for_best_model"] == "rmse"
    assert test["r2"] > 0.6 and test["rmse"] < 0.7 * baselines["training_mean"]["rmse"]
    assert math.isclose(test["rmse"] ** 2, test["mse"], rel_tol=1e-6) and test["pearson"] > 0.8
    assert baselines["tfidf_ridge"]["r2"] > 0.5 and baselines["training_mean"]["r2"] <= 0.0
    analysis = json.loads((reg_run.path / "error_analysis.json").read_text())
    worst = analysis["largest_errors"]
    assert analysis["metric"] == "absolute_error" and worst
    assert worst[0]["absolute_error"] >= worst[-1]["absolute_error"]
    assert worst[0]["absolute_error"] == pytest.approx(abs(worst[0]["label"] - worst[0]["predicted"]), abs=1e-4)


def test_plain_transformers_returns_the_same_values(reg_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rows = tuneforge.load(reg_run.path).predict(TEXTS)
    assert all(set(r) == {"score"} for r in rows)
    model = AutoModelForSequenceClassification.from_pretrained(reg_run.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(reg_run.path)
    assert model.config.problem_type == "regression" and model.config.num_labels == 1
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits[:, 0]
    assert logits.tolist() == pytest.approx([r["score"] for r in rows], abs=1e-4)
    scores = [r["score"] for r in rows]  # target units: 100 + 30 per positive word - 20 per negative word
    assert scores[0] > scores[4] > scores[1] and scores[2] > scores[0] and 60 < scores[4] < 140


def test_fold_survives_a_state_dict_round_trip(tiny_bert):
    """Checkpoints and the best-model restore go through state_dict / load_state_dict: they must come back
    to the same standardised head (the saved file is in target units)."""
    from transformers import AutoModelForSequenceClassification

    from tuneforge.tasks.regression import fold_scale, head_linear

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=1, problem_type="regression",
                                                               ignore_mismatched_sizes=True)
    head = head_linear(model)
    assert head is model.classifier
    before = head.weight.detach().clone(), head.bias.detach().clone()
    fold_scale(head, mean=50.0, std=4.0)
    state = model.state_dict()
    assert torch.allclose(state["classifier.weight"], before[0] * 4.0)
    assert torch.allclose(state["classifier.bias"], before[1] * 4.0 + 50.0)
    with torch.no_grad():
        head.weight.zero_()
    model.load_state_dict(state)
    assert torch.allclose(head.weight, before[0]) and torch.allclose(head.bias, before[1], atol=1e-6)


def test_export_verify_and_serve(reg_run, tmp_path):
    httpx = pytest.importorskip("httpx")
    from conftest import serve_in_thread

    from tuneforge.deploy.export import export_run
    from tuneforge.deploy.serve import ServeSettings

    expected = [r["score"] for r in tuneforge.load(reg_run.path).predict(TEXTS)]
    formats = ["safetensors"] + (["onnx"] if all(__import__("importlib").util.find_spec(m) for m in
                                                 ("onnx", "onnxruntime", "onnxscript")) else [])
    for fmt in formats:
        report = export_run(reg_run.path, fmt, output=tmp_path / fmt, max_examples=16, latency_examples=1)
        assert report["passed"] and report["agreement"]["measure"].startswith("values within 1% of the target")
        assert report["agreement"]["max_logit_diff"] < 1e-2 and set(report["metrics"]["change"]) == {"rmse", "r2"}
        got = [r["score"] for r in tuneforge.load(tmp_path / fmt).predict(TEXTS)]
        assert got == pytest.approx(expected, abs=1e-3)
    with serve_in_thread(tuneforge.load(reg_run.path), ServeSettings()) as (url, _):
        body = httpx.post(f"{url}/v1/classify", json={"inputs": TEXTS}, timeout=30).json()
        info = httpx.get(f"{url}/v1/model").json()
    assert [r["score"] for r in body["results"]] == pytest.approx(expected, abs=1e-4)
    assert all(set(r) == {"score"} for r in body["results"]) and info["labels"] == []


def test_lora_keeps_base_weights_and_folds_the_merged_head(tiny_bert, reg_data, tmp_path):
    from transformers import AutoModelForSequenceClassification

    run = tuneforge.train(None, base_overrides(tiny_bert, reg_data, tmp_path / "run", label_column="score",
                                               problem_type="regression", max_steps=6, learning_rate=1e-2,
                                               **{"lora.enabled": "true", "lora.r": 4}))
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert).state_dict()
    merged = AutoModelForSequenceClassification.from_pretrained(run.path).eval()
    frozen = [k for k in base if not k.startswith("classifier.") and "pooler" not in k]
    adapted = [k for k in frozen if k.endswith("attention.self.query.weight")]
    assert adapted and all(not torch.equal(base[k], merged.state_dict()[k]) for k in adapted)  # LoRA merged in ...
    untouched = [k for k in frozen if "embeddings" in k or "LayerNorm" in k]
    assert untouched and all(torch.equal(base[k], merged.state_dict()[k]) for k in untouched)  # ... nothing else
    rows = tuneforge.load(run.path).predict(TEXTS)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run.path)
    with torch.no_grad():
        logits = merged(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits[:, 0]
    assert logits.tolist() == pytest.approx([r["score"] for r in rows], abs=1e-4)
    assert 40 < sum(logits.tolist()) / len(TEXTS) < 160  # target units (the training mean is ~100), not ~0
