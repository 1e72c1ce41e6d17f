"""Seq2seq task on tiny T5 and BART built offline: learning, generation, reload, config and data checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import copy_rows, one_line_error, write_jsonl

import tuneforge
from tuneforge.cli import main
from tuneforge.config import load_config, render_config
from tuneforge.engine.precision import resolve_mixed_precision


def _overrides(model, data, out, **extra):
    items = {"task": "seq2seq", "model_name_or_path": str(model), "train_file": str(data["train"]),
             "validation_file": str(data["validation"]), "output_dir": str(out), "report_to": "none", "seed": 0,
             "max_target_length": 16, "preprocessing_cache_dir": str(out.parent / "cache")}
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture(scope="module")
def t5_run(tiny_t5, copy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("seq2seq_runs") / "t5"
    return tuneforge.train(None, _overrides(tiny_t5, copy_data, out, learning_rate=3e-3, num_train_epochs=8,
                                            per_device_train_batch_size=16, num_beams=1, eval_strategy="epoch",
                                            metric_for_best_model="rougeL"))


def test_t5_learns_to_reverse(t5_run, copy_data):
    metrics = t5_run.metrics["eval"]
    assert metrics["rougeL"] > 0.8 and metrics["rouge1"] > 0.9
    rows = [json.loads(line) for line in copy_data["validation"].read_text().splitlines()]
    outputs = tuneforge.load(t5_run.path).summarize([r["text"] for r in rows])
    exact = sum(o.strip() == r["summary"] for o, r in zip(outputs, rows))
    assert exact >= 0.7 * len(rows), list(zip(outputs[:5], rows[:5]))


def test_run_reloads_in_plain_transformers_and_matches_summarize(t5_run, capsys):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(t5_run.path)
    model = AutoModelForSeq2SeqLM.from_pretrained(t5_run.path).eval()
    texts = ["red cat sun", "blue dog tree star"]
    prefix = t5_run.config.data.source_prefix
    assert prefix == "summarize: "  # taken from task_specific_params.summarization
    with torch.no_grad():
        out = model.generate(**tok([prefix + t for t in texts], return_tensors="pt", padding=True))
    plain = tok.batch_decode(out, skip_special_tokens=True)
    assert main(["summarize", str(t5_run.path), "--text", texts[0], "--text", texts[1]]) == 0
    printed = [line.split("\t")[0] for line in capsys.readouterr().out.strip().splitlines()]
    assert printed == plain
    gen = json.loads((t5_run.path / "generation_config.json").read_text())
    assert gen["num_beams"] == 1 and gen["max_new_tokens"] == 16


def test_t5_defaults_and_data_report(t5_run):
    report = json.loads((t5_run.path / "data_report.json").read_text())
    assert report["splits"]["train"]["target_truncated_percent"] == 0.0
    assert report["max_target_length"] == 16
    from tuneforge.engine.precision import cpu_has_native_bf16

    # CPU: fp16 is never chosen for T5; bf16 (no overflow) where the CPU computes it natively
    assert t5_run.info["mixed_precision"] == ("bf16" if cpu_has_native_bf16() else "fp32")


def test_bart_trains_and_generates(tiny_bart, copy_data, tmp_path):
    run = tuneforge.train(None, _overrides(tiny_bart, copy_data, tmp_path / "bart", num_train_epochs=1,
                                           max_train_samples=64, num_beams=2))
    assert run.config.training.learning_rate == 5e-5  # BART-family default
    assert run.config.data.source_prefix == ""  # BART has no task prefix
    assert run.config.generation.num_beams == 2 and run.config.generation.no_repeat_ngram_size == 0
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len", "loss"} <= run.metrics["eval"].keys()
    out = tuneforge.load(run.path).summarize(["red cat"])
    assert isinstance(out[0], str)


def test_target_padding_is_ignored_by_the_loss(tiny_t5, copy_data):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from tuneforge.data.prepared import TokenizedSplit
    from tuneforge.tasks import get_task

    task = get_task("seq2seq")
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5).eval()
    tok = AutoTokenizer.from_pretrained(tiny_t5)
    src = TokenizedSplit.from_lists([tok(r["text"])["input_ids"] for r in copy_rows(4, 7)])
    src.attach_targets(TokenizedSplit.from_lists([tok(text_target=r["summary"])["input_ids"] for r in copy_rows(4, 7)]))
    idx = np.arange(4)
    tight, padded = task.collate(src, idx, 0), task.collate(src, idx, 0, pad_to_multiple_of=32)
    assert tight["num_items"] == padded["num_items"] == int(src.targets.lengths.sum())
    assert (padded["labels"] == -100).sum() > (tight["labels"] == -100).sum()
    with torch.no_grad():
        torch.testing.assert_close(task.loss(model, tight), task.loss(model, padded), rtol=1e-5, atol=1e-5)
        logits = task.logits(model, tight)
        manual = torch.nn.functional.cross_entropy(logits[tight["labels"] != -100],
                                                   tight["labels"][tight["labels"] != -100], reduction="sum")
    torch.testing.assert_close(task.loss(model, tight), manual, rtol=1e-5, atol=1e-5)


def test_accumulated_token_gradients_equal_one_big_batch(tiny_t5):
    from conftest import cpu_accelerator
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from tuneforge.data.prepared import TokenizedSplit
    from tuneforge.engine.step import forward_backward
    from tuneforge.tasks import get_task

    task = get_task("seq2seq")
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5)
    tok = AutoTokenizer.from_pretrained(tiny_t5)
    rows = copy_rows(5, 9)
    src = TokenizedSplit.from_lists([tok(r["text"])["input_ids"] for r in rows])
    src.attach_targets(TokenizedSplit.from_lists([tok(text_target=r["summary"])["input_ids"] for r in rows]))
    acc = cpu_accelerator()

    def grads(groups):
        model.zero_grad(set_to_none=True)
        forward_backward(acc, model, task, [task.collate(src, np.asarray(g), 0) for g in groups])
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    big, small = grads([[0, 1, 2, 3, 4]]), grads([[0, 1], [2, 3], [4]])
    for name in big:
        torch.testing.assert_close(small[name], big[name], atol=1e-6, rtol=1e-4)


def test_t5_never_gets_fp16_automatically():
    assert resolve_mixed_precision("auto", "cuda", bf16_supported=False, fp16_safe=False)[0] == "no"
    assert resolve_mixed_precision("auto", "cuda", bf16_supported=True, fp16_safe=False)[0] == "bf16"
    mode, warning = resolve_mixed_precision("fp16", "cuda", bf16_supported=False, fp16_safe=False)
    assert mode == "fp16" and "NaN" in warning


def test_seq2seq_config_keys_and_family_notes(capsys):
    text = render_config("seq2seq")
    assert "target_column: summary" in text and "max_source_length" in text and "num_beams: null" in text
    assert "3e-4 for T5-family" in text and "label_column" not in text
    assert "target_column" not in render_config("classification")
    cfg = load_config(None, ["task=seq2seq", "model_name_or_path=m", "train_file=t.jsonl", "num_beams=2"])
    assert cfg.training.learning_rate is None and cfg.generation.num_beams == 2
    line = one_line_error(capsys, ["train", "task=classification", "model_name_or_path=m", "train_file=t.csv",
                                   "target_column=summary"])
    assert "only for task seq2seq" in line
    line = one_line_error(capsys, ["train", "task=seq2seq", "model_name_or_path=m", "train_file=t.jsonl",
                                   "metric_for_best_model=rougeL", "predict_with_generate=false"])
    assert "predict_with_generate" in line


def test_missing_target_column_is_one_line(tmp_path, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", [{"article": "a b", "highlights": "b"}] * 3)
    line = one_line_error(capsys, ["train", "task=seq2seq", "model_name_or_path=m", f"train_file={path}",
                                   "text_column=article"])
    assert "no column 'summary'" in line and "highlights" in line


def test_generation_defaults_follow_the_model_preferences(tiny_t5):
    """null settings take the model's own preferences (bart-large-cnn style), else tuneforge's fallbacks."""
    from transformers import AutoModelForSeq2SeqLM

    from tuneforge.tasks import get_task

    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5)
    model.config.task_specific_params["summarization"].update(num_beams=6, no_repeat_ngram_size=3)
    model.generation_config.length_penalty = 2.0
    cfg = load_config(None, ["task=seq2seq", f"model_name_or_path={tiny_t5}", "train_file=t.jsonl",
                             "no_repeat_ngram_size=2"])
    resolved, _ = get_task("seq2seq").resolve(cfg, model, None, None)
    g = resolved.generation
    assert (g.num_beams, g.length_penalty, g.no_repeat_ngram_size, g.early_stopping) == (6, 2.0, 2, True)
    assert model.generation_config.num_beams == 6 and model.generation_config.max_new_tokens == 128


def test_error_analysis_lists_lowest_rouge_rows_with_their_texts(t5_run, copy_data):
    analysis = json.loads((t5_run.path / "error_analysis.json").read_text())
    assert analysis["split"] == "validation" and analysis["metric"] == "rougeL"
    worst = analysis["lowest_rouge"]
    assert worst and [w["rougeL"] for w in worst] == sorted(w["rougeL"] for w in worst)
    rows = [json.loads(line) for line in copy_data["validation"].read_text().splitlines()]
    for w in worst:
        row = rows[int(w["where"].rsplit("line ", 1)[1]) - 1]  # jsonl: line n is row n
        assert (w["source"], w["reference"]) == (row["text"], row["summary"])
    slices = analysis["length_slices"]
    recombined = sum(s["rows"] * s["rougeL"] for s in slices) / sum(s["rows"] for s in slices)
    assert abs(recombined - t5_run.metrics["eval"]["rougeL"]) < 1e-6
    assert "lead_1" in t5_run.metrics["baselines"]
