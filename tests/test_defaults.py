"""Classification defaults chosen by evidence (docs/QUALITY.md): rules fill only what the user left unset."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import yaml
from conftest import base_overrides

import tuneforge
from tuneforge.tasks.encoder_defaults import (
    HEAD_LR_FACTOR,
    LABEL_SMOOTHING,
    MAX_EPOCHS,
    MIN_EPOCHS,
    MIN_STEPS,
    learning_rate_for,
    training_budget,
)


def test_learning_rate_by_encoder_width():
    assert learning_rate_for(SimpleNamespace(hidden_size=384))[0] == 1e-4  # MiniLM
    assert learning_rate_for(SimpleNamespace(hidden_size=768))[0] == 3e-5  # BERT-base
    assert learning_rate_for(SimpleNamespace(hidden_size=1024))[0] == 1.5e-5  # BERT-large
    assert learning_rate_for(SimpleNamespace(n_embd=768))[0] == 3e-5  # GPT-2 as a classifier
    assert learning_rate_for(SimpleNamespace())[0] == 1.5e-5  # unknown width: the cautious rate


def test_budget_reaches_min_steps_within_the_epoch_bounds():
    epochs, _ = training_budget(1651, 16)  # 104 steps per epoch (man-name)
    assert epochs * 104 >= MIN_STEPS and (epochs - 1) * 104 < MIN_STEPS
    assert training_budget(10_000, 16)[0] == MIN_EPOCHS  # 3 epochs already give enough steps
    assert training_budget(100, 16)[0] == MAX_EPOCHS
    assert training_budget(1651, 64)[0] == MAX_EPOCHS  # counted in optimizer steps: batch x accumulation


def _rows(path):
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _without(items, *keys):
    return [i for i in items if i.split("=", 1)[0] not in keys]


@pytest.fixture
def encoder_only(tiny_bert, tmp_path):
    """tiny_bert without its classifier (as a pretrained encoder ships): a task run gets a new head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "encoder"
    AutoModelForSequenceClassification.from_pretrained(tiny_bert).bert.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    return folder


def test_unset_values_are_resolved_and_written_explicit_ones_win(tiny_bert, encoder_only, toy_data, tmp_path):
    from transformers import AutoConfig

    items = _without(base_overrides(encoder_only, toy_data, tmp_path / "auto", max_steps=2, save_strategy="no"),
                     "learning_rate", "num_train_epochs")
    run = tuneforge.train(None, items)
    written = yaml.safe_load((run.path / "run_config.yaml").read_text())["training"]
    assert written["learning_rate"] == learning_rate_for(AutoConfig.from_pretrained(encoder_only))[0]
    assert written["class_weights"] == "auto"
    assert written["head_learning_rate"] == pytest.approx(HEAD_LR_FACTOR * written["learning_rate"])  # a new head
    assert written["num_train_epochs"] == training_budget(len(_rows(toy_data["train"])), 16)[0]
    assert written["label_smoothing_factor"] == LABEL_SMOOTHING > 0  # single-label
    assert run.config.training.learning_rate == written["learning_rate"]  # the run reloads the resolved value
    assert written["per_device_eval_batch_size"] == 16  # null on the CPU (docs/BENCHMARKS.md)

    explicit = tuneforge.train(None, base_overrides(tiny_bert, toy_data, tmp_path / "set", max_steps=2,
                                                    save_strategy="no", learning_rate=7e-4, class_weights="none",
                                                    num_train_epochs=2, per_device_eval_batch_size=64,
                                                    head_learning_rate=5e-4, label_smoothing_factor=0))
    written = yaml.safe_load((explicit.path / "run_config.yaml").read_text())["training"]
    assert written["learning_rate"] == 7e-4 and written["class_weights"] == "none"
    assert written["label_smoothing_factor"] == 0  # an explicit 0 switches it off
    assert written["num_train_epochs"] == 2 and written["per_device_eval_batch_size"] == 64
    assert written["head_learning_rate"] == 5e-4
    follows = tuneforge.train(None, base_overrides(encoder_only, toy_data, tmp_path / "follows", max_steps=1,
                                                   save_strategy="no", learning_rate=7e-4))
    written = yaml.safe_load((follows.path / "run_config.yaml").read_text())["training"]
    assert written["head_learning_rate"] == pytest.approx(HEAD_LR_FACTOR * 7e-4)  # follows an explicit rate
    kept = tuneforge.train(None, base_overrides(tiny_bert, toy_data, tmp_path / "kept", max_steps=1,
                                                save_strategy="no"))  # the checkpoint has this 2-label head
    assert yaml.safe_load((kept.path / "run_config.yaml").read_text())["training"]["head_learning_rate"] is None
    frozen = tuneforge.train(None, base_overrides(encoder_only, toy_data, tmp_path / "frozen", max_steps=1,
                                                  save_strategy="no", **{"freeze.bottom_layers": 1}))
    assert yaml.safe_load((frozen.path / "run_config.yaml").read_text())["training"]["head_learning_rate"] is None


@pytest.mark.parametrize("task", ["seq2seq", "causal_lm"])
def test_tasks_without_the_rules_keep_their_own_defaults(task):
    from tuneforge.config import load_config

    cfg = load_config(None, [f"task={task}", "model_name_or_path=m", "train_file=x.csv", "num_train_epochs=null"])
    assert (cfg.training.num_train_epochs == 3.0 and cfg.training.learning_rate is not None) or task == "seq2seq"
