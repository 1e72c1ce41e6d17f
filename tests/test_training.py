"""End-to-end classification training on a tiny offline BERT: learning, artifacts, reload, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import base_overrides, toy_rows, write_csv
from safetensors.torch import load_file

import tuneforge
from tuneforge.cli import main


def test_training_learns_well_above_chance(trained_run):
    metrics = trained_run.metrics
    assert metrics["eval"]["accuracy"] > 0.85  # chance is ~0.5 on the balanced toy set
    assert metrics["test"]["accuracy"] > 0.85
    losses = [json.loads(line)["loss"] for line in (trained_run.path / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line and "eval_loss" not in line]
    assert losses[-1] < losses[0] * 0.7


def test_parameters_changed(trained_run, tiny_bert):
    before = load_file(tiny_bert / "model.safetensors")
    after = load_file(trained_run.path / "model.safetensors")
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert "bert.embeddings.word_embeddings.weight" in changed
    assert any(k.startswith("bert.encoder.layer.1.") for k in changed)


def test_run_folder_is_complete(trained_run):
    path = trained_run.path
    for name in ("model.safetensors", "config.json", "tokenizer.json", "run.json", "run_config.yaml",
                 "metrics.json", "metrics.jsonl", "data_report.json", "data_report.txt"):
        assert (path / name).is_file(), name
    info = trained_run.info
    assert info["status"] == "finished" and info["task"] == "classification"
    assert json.loads((path / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    report = json.loads((path / "data_report.json").read_text())
    assert report["splits"]["train"]["label_counts"].keys() == {"neg", "pos"}
    assert report["splits"]["train"]["truncated_percent"] == 0.0
    # the resolved config reloads to the same values
    assert trained_run.config.training.learning_rate == 3e-3


def test_plain_transformers_reload_gives_same_predictions(trained_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = [t for t, _ in toy_rows(12, 99)]
    loaded = tuneforge.load(trained_run.path)
    ours = loaded.predict(texts)
    tok = AutoTokenizer.from_pretrained(trained_run.path)
    model = AutoModelForSequenceClassification.from_pretrained(trained_run.path).eval()
    with torch.no_grad():
        probs = torch.softmax(model(**tok(texts, padding=True, return_tensors="pt")).logits, -1)
    plain = [model.config.id2label[int(i)] for i in probs.argmax(-1)]
    assert [r["label"] for r in ours] == plain
    # on a GPU ours runs there (TF32 matmuls, enabled by training), the plain model on the CPU
    tolerance = 1e-5 if loaded.device.type == "cpu" else 2e-3
    np.testing.assert_allclose([r["probability"] for r in ours], probs.max(-1).values.numpy(), atol=tolerance)


def test_cli_predict_and_evaluate(trained_run, toy_data, tmp_path, capsys):
    assert main(["predict", str(trained_run.path), "--text", "a wonderful superb film",
                 "--text", "an awful dreadful ending"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["pos", "neg"]
    out = tmp_path / "pred.jsonl"
    assert main(["predict", str(trained_run.path), "--input", str(toy_data["test"]), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 80 and {"text", "label", "probability"} <= rows[0].keys()
    assert main(["evaluate", str(trained_run.path), "--data", str(toy_data["test"]), "--name", "held"]) == 0
    saved = json.loads((trained_run.path / "eval" / "held" / "metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(trained_run.metrics["test"]["accuracy"])


def test_evaluate_rejects_unknown_label(trained_run, tmp_path, capsys):
    bad = write_csv(tmp_path / "bad.csv", [("a great film", "pos"), ("meh", "neutral")])
    assert main(["evaluate", str(trained_run.path), "--data", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.csv, line 3" in err and "'neutral'" in err and len(err.splitlines()) == 1


def test_checkpoints_keep_best_and_newest(trained_run):
    kept = sorted(p.name for p in (trained_run.path / "checkpoints").iterdir())
    state = json.loads((trained_run.path / "checkpoints" / kept[-1] / "trainer_state.json").read_text())
    assert len(kept) <= 2
    assert f"checkpoint-{trained_run.metrics['best_step']}" in kept
    assert f"checkpoint-{state['global_step']}" in kept and state["global_step"] == 80
    for name in kept:
        assert (trained_run.path / "checkpoints" / name / "COMPLETE").exists()
        torch.load(trained_run.path / "checkpoints" / name / "optimizer.pt", weights_only=True)


def test_resume_mid_epoch_reproduces_uninterrupted_run(tiny_bert, toy_data, tmp_path):
    common = dict(max_steps=12, save_strategy="steps", save_steps=5, save_total_limit="null",
                  eval_strategy="no", load_best_model_at_end="false", per_device_train_batch_size=8,
                  gradient_accumulation_steps=2)
    full = tuneforge.train(None, base_overrides(tiny_bert, toy_data, tmp_path / "full", **common))
    # a run killed after step 5: its folder holds only checkpoint-5
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copytree(full.path / "checkpoints" / "checkpoint-5", cut / "checkpoints" / "checkpoint-5")
    shutil.copy(full.path / "run.json", cut / "run.json")
    resumed = tuneforge.train(None, base_overrides(tiny_bert, toy_data, cut, resume_from_checkpoint="auto",
                                                   **common))
    a, b = load_file(full.path / "model.safetensors"), load_file(resumed.path / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert resumed.metrics["train"]["global_step"] == 12


def test_early_stopping_stops_before_the_end(tiny_bert, toy_data, tmp_path):
    run = tuneforge.train(None, base_overrides(
        tiny_bert, toy_data, tmp_path / "es", learning_rate=1e-9, eval_strategy="steps", eval_steps=5,
        early_stopping_patience=2, metric_for_best_model="loss", early_stopping_threshold=0.01))
    train = run.metrics["train"]
    assert train["stopped_early"] and train["global_step"] == 15  # best at 5, no gain at 10 and 15


def test_sentence_pairs_train(tiny_bert, tmp_path, capsys):
    rows = [(a, b, "same" if (a.split()[0] in b) else "different") for a, b in
            ((t1, t2) for (t1, _), (t2, _) in zip(toy_rows(200, 5), toy_rows(200, 6)))]
    path = tmp_path / "pairs.csv"
    import csv

    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([("premise", "hypothesis", "label"), *rows])
    run = tuneforge.train(None, [
        "task=classification", f"model_name_or_path={tiny_bert}", f"train_file={path}",
        "text_column=premise", "text_pair_column=hypothesis", f"output_dir={tmp_path / 'pairs'}",
        "num_train_epochs=1", f"preprocessing_cache_dir={tmp_path / 'cache'}"])
    assert run.info["status"] == "finished"
    assert list((run.path / "logs").glob("events.out.tfevents.*"))  # TensorBoard is on by default
    report = json.loads((run.path / "data_report.json").read_text())
    assert report["splits"]["train"]["held_out"] == report["splits"]["validation"]["rows_kept"] > 0
    pred = tuneforge.load(run.path).predict(["the movie was great"], pairs=["the plot"])
    assert pred[0]["label"] in {"same", "different"}
    capsys.readouterr()
    assert main(["predict", str(run.path), "--text", "the movie was great", "--text-pair", "the plot"]) == 0
    assert capsys.readouterr().out.split("\t")[0] == pred[0]["label"]
    assert main(["predict", str(run.path), "--text", "only one side"]) == 2
    assert "--text-pair" in capsys.readouterr().err


def test_cli_train_string_labels_without_validation_file(tiny_bert, toy_data, tmp_path, capsys):
    """The foundation's acceptance scenario, through the command line."""
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "cli_run"
    assert main(["train", "task=classification", f"model_name_or_path={tiny_bert}",
                 f"train_file={toy_data['train']}", f"output_dir={out}", "num_train_epochs=1", "max_length=64",
                 f"preprocessing_cache_dir={tmp_path / 'cache'}"]) == 0
    printed = capsys.readouterr().out
    assert "Data report" in printed and "held out for validation" in printed and f"run saved to {out}" in printed
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "f1_macro", "confusion_matrix", "per_class"} <= metrics["eval"].keys()
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
