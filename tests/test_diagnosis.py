"""The end-of-run diagnosis on real tiny runs (rules: evaluate/diagnosis.py) and the base-model baseline."""

from __future__ import annotations

import json

from conftest import LM_CORPUS, base_overrides, train_tiny_lm

import tuneforge
from tuneforge.evaluate.diagnosis import classes_never_predicted, diagnose, overfit, undertrained


def _kinds(run):
    return [note["kind"] for note in run.metrics["diagnosis"]]


def test_undertrained_run_gets_the_note_in_metrics_terminal_and_report(tiny_bert, toy_data, tmp_path, capsys):
    # a low learning rate and few steps: the loss is still falling steadily when training stops
    out = tmp_path / "short"
    run = tuneforge.train(None, base_overrides(tiny_bert, toy_data, out, learning_rate=3e-3, max_steps=60,
                                               logging_steps=2, eval_strategy="steps", eval_steps=60,
                                               save_strategy="no"))
    assert "undertrained" in _kinds(run)
    note = next(n for n in run.metrics["diagnosis"] if n["kind"] == "undertrained")
    assert "num_train_epochs" in note["try"]
    printed = capsys.readouterr().out
    assert "still falling" in printed and "tfidf_logreg" in printed
    assert "still falling" in (out / "report.html").read_text(encoding="utf-8")
    assert "still falling" in (out / "README.md").read_text(encoding="utf-8")  # the model card's limitations


def test_converged_run_that_beats_its_baseline_gets_no_note(tiny_gpt2_lm, tmp_path):
    # the base model (a first short run) is the baseline of a second run on new text, which it then learns
    (tmp_path / "base").mkdir()
    base = train_tiny_lm(tiny_gpt2_lm, tmp_path / "base", max_steps=40)
    corpus = tmp_path / "new.txt"
    corpus.write_text("\n\n".join(reversed(LM_CORPUS)) + "\n")
    run = tuneforge.train(None, [f"{k}={v}" for k, v in {
        "task": "causal_lm", "model_name_or_path": str(base.path), "train_file": str(corpus),
        "validation_file": str(corpus), "output_dir": str(tmp_path / "run"), "report_to": "none", "seed": 0,
        "learning_rate": 3e-3, "max_steps": 150, "save_strategy": "no", "block_size": 64, "logging_steps": 5,
        "eval_strategy": "steps", "eval_steps": 50}.items()])
    base_model = run.metrics["baselines"]["base_model"]
    assert run.metrics["eval"]["perplexity"] < base_model["perplexity"]
    assert run.metrics["diagnosis"] == []
    assert json.loads((run.path / "metrics.json").read_text())["baselines"]["split"] == "validation"


def test_model_trained_from_scratch_has_no_base_model_baseline(tiny_gpt2_lm, tmp_path):
    run = train_tiny_lm(tiny_gpt2_lm, tmp_path, max_steps=5)
    assert "base_model" not in (run.metrics.get("baselines") or {})


def test_rules_on_hand_made_logs():
    falling = [{"step": s, "loss": 3.0 - s / 50} for s in range(10, 101, 10)]
    flat = [{"step": s, "loss": 3.0 * 0.5 ** (s / 10) + 0.1} for s in range(10, 201, 10)]
    assert undertrained(falling)["kind"] == "undertrained"
    assert undertrained(flat) is None
    # validation already past its best: more epochs would not help
    assert undertrained(falling + [{"step": 100, "eval_loss": 1.0}], best_step=50) is None
    rising = [{"step": 50, "eval_loss": 1.0}, {"step": 100, "eval_loss": 1.3}]
    assert overfit(falling + rising)["kind"] == "overfit"
    assert overfit(falling + rising[:1]) is None
    m = {"test": {"per_class": {"a": {}, "b": {}, "c": {}}, "confusion_matrix": [[5, 0, 0], [4, 1, 0], [3, 0, 0]]}}
    note = classes_never_predicted(m)
    assert "1 of the 3 classes" in note["message"] and "c" in note["message"]
    worse = {"test": {"f1_macro": 0.5, "accuracy": 0.9},
             "baselines": {"split": "test", "tfidf_logreg": {"f1_macro": 0.6, "accuracy": 0.8}}}
    assert [n["kind"] for n in diagnose(worse, flat, lambda k: True)] == ["below_baseline"]
    tie = {"test": {"f1_macro": 0.598}, "baselines": {"tfidf_logreg": {"f1_macro": 0.6}}}
    assert diagnose(tie, flat, lambda k: True) == []
    lm = {"eval": {"perplexity": 12.0}, "baselines": {"base_model": {"perplexity": 10.0}}}
    assert diagnose(lm, flat, lambda k: k != "perplexity")[0]["kind"] == "below_baseline"


def test_undertrained_from_validation_when_the_schedule_flattens_the_training_loss():
    # a linear schedule ends at a small rate: the training loss flattens though the model has far to go
    train = [{"step": s, "loss": 3.3 - 0.5 * min(s, 300) / 300} for s in range(10, 451, 10)]
    still_falling = [{"step": 150, "eval_loss": 3.1}, {"step": 300, "eval_loss": 2.84},
                     {"step": 450, "eval_loss": 2.76}]
    assert undertrained(train + still_falling, best_step=450)["kind"] == "undertrained"
    learned = [{"step": s, "loss": 3.3 * (0.3 if s > 300 else 1 - 0.7 * s / 300)} for s in range(10, 451, 10)]
    assert undertrained(learned + still_falling, best_step=450) is None  # trained loss already below half
    flat = [{"step": 150, "eval_loss": 3.1}, {"step": 300, "eval_loss": 2.84}, {"step": 450, "eval_loss": 2.83}]
    assert undertrained(train + flat, best_step=450) is None  # validation stopped improving


def test_undertrained_when_validation_still_falls_fast():
    learned = [{"step": s, "loss": 2.0 * (0.2 if s > 300 else 1 - 0.8 * s / 300)} for s in range(10, 376, 5)]
    fast = [{"step": 125, "eval_loss": 0.47}, {"step": 250, "eval_loss": 0.39}, {"step": 375, "eval_loss": 0.31}]
    note = undertrained(learned + fast, best_step=375)
    assert note and "0.39 -> 0.31" in note["message"] and "of its start" not in note["message"]


def test_a_run_below_its_baseline_because_it_overfit_is_told_to_train_less_not_more():
    # six epochs of 32 steps; validation loss lowest after epoch 2, then rising while the training loss falls
    train = [{"step": s, "epoch": s / 32, "loss": 0.7 * 0.98 ** s} for s in range(8, 193, 8)]
    evals = [{"step": 32 * e, "epoch": float(e), "eval_loss": v}
             for e, v in zip(range(1, 7), (0.30, 0.23, 0.34, 0.38, 0.49, 0.43))]
    below = {"test": {"accuracy": 0.879}, "baselines": {"tfidf_logreg": {"accuracy": 0.886}}}
    notes = diagnose(below, train + evals, lambda k: True)
    assert [n["kind"] for n in notes] == ["below_baseline", "overfit"]
    assert "overfitting note" in notes[0]["try"] and "num_train_epochs=10" not in notes[0]["try"]
    assert notes[1]["try"].startswith("num_train_epochs=3 (validation loss was lowest at epoch 2 of 6)")
    # lowest one epoch before the end: no shorter schedule to name
    late = [dict(r, eval_loss=v) for r, v in zip(evals, (0.30, 0.28, 0.26, 0.24, 0.22, 0.25))]
    assert overfit(train + late)["try"].startswith("fewer num_train_epochs")
    # below the baseline with no sign of under- or overtraining: not "train longer" either
    flat = [{"step": s, "loss": 3.0 * 0.5 ** (s / 10) + 0.1} for s in range(10, 201, 10)]
    assert diagnose(below, flat, lambda k: True)[0]["try"] == "learning_rate=auto, or a larger model_name_or_path"
