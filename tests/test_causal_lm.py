"""Causal LM task on tiny GPT-2 and Llama models built offline: packing, masks, chat, learning, generation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import LM_CORPUS, one_line_error, write_jsonl

import tuneforge
from tuneforge.cli import main
from tuneforge.config import load_config
from tuneforge.data.packing import packed_split
from tuneforge.data.prepared import TokenizedSplit
from tuneforge.tasks import get_task


def _cfg(model, train, out=None, **extra):
    items = {"task": "causal_lm", "model_name_or_path": str(model), "train_file": str(train), "report_to": "none",
             "seed": 0}
    if out is not None:
        items |= {"output_dir": str(out), "preprocessing_cache_dir": str(out.parent / "cache")}
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


def _prepared(model, train, **extra):
    from transformers import AutoTokenizer

    task = get_task("causal_lm")
    cfg = load_config(None, _cfg(model, train, **extra))
    data = task.prepare_data(cfg)
    tok = AutoTokenizer.from_pretrained(model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return task, cfg, data, tok


def test_packing_puts_every_token_in_exactly_one_block_and_trains_eos(tiny_gpt2_lm, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(LM_CORPUS * 3) + "\n")
    task, cfg, data, tok = _prepared(tiny_gpt2_lm, path, validation_split_percentage=20, block_size=16)
    splits = task.tokenize(tok, data, cfg, 16)
    eos = tok.eos_token_id
    for name, split in splits.items():
        docs = [tok(t)["input_ids"] + [eos] for t in data.splits[name].columns["text"]]
        flat = [x for d in docs for x in d]
        n_real = len(flat)
        batch = task.collate(split, np.arange(len(split)), tok.pad_token_id)  # every block, in order
        ids, labels, positions = (batch[k].reshape(-1) for k in ("input_ids", "labels", "position_ids"))
        assert ids[:n_real].tolist() == flat  # in order, once each
        assert (ids[n_real:] == tok.pad_token_id).all() and len(ids) - n_real < 16
        ends = np.cumsum([len(d) for d in docs]) - 1
        assert (labels[ends] == eos).all()  # EOS is a training target (pad == eos must not mask it)
        starts = ends[:-1] + 1
        assert (labels[starts] == -100).all()  # no loss for predicting a document from the previous one
        assert (labels[n_real:] == -100).all()  # padding ignored
        assert (positions[starts] == 0).all()
    assert data.info["format"] == "text" and cfg.data.packing is None  # found, not written into the config
    from transformers import AutoModelForCausalLM

    resolved, _ = task.resolve(cfg, AutoModelForCausalLM.from_pretrained(tiny_gpt2_lm), tok, data)
    assert (resolved.data.data_format, resolved.data.packing, resolved.data.block_size) == ("text", True, 16)
    assert cfg.data.data_format == "auto"  # resolution returns a new config


def test_documents_longer_than_the_position_table_pack_and_train(tiny_gpt2_lm, tmp_path):
    """Packing at block_size == the model's 64 learned positions with documents of ~200 tokens: a document
    cut by a block boundary restarts its positions, so none reaches the table's end (found on an H100, where
    continued positions hit GPT-2's 1024-row table as a device-side assert; on CPU it is an IndexError)."""
    long_doc = " ".join(LM_CORPUS * 5)  # one document: several blocks long
    path = tmp_path / "long.txt"
    path.write_text("\n\n".join(f"{i} {long_doc}" for i in range(6)) + "\n")  # distinct: duplicates are dropped
    task, cfg, data, tok = _prepared(tiny_gpt2_lm, path, validation_split_percentage=20, block_size=64)
    split = task.tokenize(tok, data, cfg, 64)["train"]
    assert split.offsets[1] - split.offsets[0] == 64 and len(tok(long_doc)["input_ids"]) > 2 * 64
    positions = task.collate(split, np.arange(len(split)), tok.pad_token_id)["position_ids"].numpy()
    assert positions.max() == 63 and (positions[:, 0] == 0).all()
    run = tuneforge.train(None, _cfg(tiny_gpt2_lm, path, tmp_path / "run", block_size=64, max_steps=2,
                                     validation_split_percentage=20, per_device_train_batch_size=2))
    assert np.isfinite(run.metrics["eval"]["loss"])


@pytest.mark.parametrize("family", ["tiny_gpt2_lm", "tiny_llama"])
def test_packed_logits_equal_per_document_logits(family, request):
    """Position ids that restart per document and no attention mask keep documents apart."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = request.getfixturevalue(family)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    docs = [tok(t)["input_ids"] + [tok.eos_token_id] for t in LM_CORPUS[:3]]
    split = TokenizedSplit.from_lists(docs)
    task = get_task("causal_lm")
    packed = packed_split(split, block_size=sum(map(len, docs)))
    batch = task.collate(packed, np.array([0]), 0)
    assert "attention_mask" not in batch
    with torch.no_grad():
        # the task's own loss path gives the same per-document loss as scoring documents one by one
        per_doc = sum(torch.nn.functional.cross_entropy(model(input_ids=torch.tensor([d])).logits[0, :-1],
                                                        torch.tensor(d[1:]), reduction="sum") for d in docs)
        torch.testing.assert_close(task.loss(model, batch), per_doc, atol=1e-3, rtol=1e-4)
        together = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        start = 0
        for d in docs:
            alone = model(input_ids=torch.tensor([d])).logits[0]
            torch.testing.assert_close(together[start:start + len(d)], alone, atol=1e-4, rtol=1e-4)
            start += len(d)


def test_prompt_tokens_get_no_loss(tiny_gpt2_lm, tmp_path):
    rows = [{"prompt": "Q: what saves nine? A:", "completion": " a stitch in time"},
            {"prompt": "Q: who catches the worm? A:", "completion": " the early bird"}]
    path = write_jsonl(tmp_path / "pc.jsonl", rows * 5)
    task, cfg, data, tok = _prepared(tiny_gpt2_lm, path, validation_file=str(path))
    assert data.info["format"] == "prompt_completion"
    split = task.tokenize(tok, data, cfg, 64)["train"]
    assert not split.packed  # prompt/completion: dynamic padding, not packing, by default
    for i in range(len(split)):
        ids = split.row(i).tolist()
        labels = split.token_labels[split.offsets[i]:split.offsets[i + 1]].tolist()
        prompt = tok(rows[i % 2]["prompt"])["input_ids"]
        assert labels[:len(prompt)] == [-100] * len(prompt)
        assert labels[len(prompt):] == ids[len(prompt):] and ids[-1] == tok.eos_token_id
    batch = task.collate(split, np.array([0, 1]), tok.pad_token_id)
    assert batch["num_items"] == int((batch["labels"][:, 1:] != -100).sum())


def test_rows_whose_completion_is_truncated_away_are_dropped_and_counted(tiny_gpt2_lm, tmp_path):
    long_prompt = "Q: " + " ".join(["the weather today is mild and dry"] * 12) + " A:"
    rows = [row for i in range(4) for row in ({"prompt": f"Q: what saves nine, take {i}? A:", "completion": " time"},
                                              {"prompt": f"{long_prompt} {i}", "completion": " nothing left"})]
    path = write_jsonl(tmp_path / "pc.jsonl", rows)
    task, cfg, data, tok = _prepared(tiny_gpt2_lm, path, validation_file=str(path))
    split = task.tokenize(tok, data, cfg, 32)["train"]
    assert len(split) == 4 and data.report.splits["train"].dropped_no_target == 4
    assert all((split.token_labels[split.offsets[i] + 1:split.offsets[i + 1]] != -100).any() for i in range(4))
    assert "dropped 4 rows with nothing left to learn" in data.report.render()


def test_an_explicit_block_size_is_honoured_up_to_the_position_limit(tiny_gpt2_lm, tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from tuneforge.errors import UserError

    task, tok = get_task("causal_lm"), AutoTokenizer.from_pretrained(tiny_gpt2_lm)
    config = AutoConfig.from_pretrained(tiny_gpt2_lm)  # 64 positions
    assert task.max_length(load_config(None, _cfg(tiny_gpt2_lm, "t.txt", block_size=48)), tok, config) == 48
    config.n_positions = 4096  # a long-context model: an explicit 2048 is not cut to the 1024 default cap
    assert task.max_length(load_config(None, _cfg(tiny_gpt2_lm, "t.txt", block_size=2048)), tok, config) == 2048
    assert task.max_length(load_config(None, _cfg(tiny_gpt2_lm, "t.txt")), tok, config) <= 1024
    with pytest.raises(UserError, match="block_size: 8192 tokens is longer than the model accepts"):
        task.max_length(load_config(None, _cfg(tiny_gpt2_lm, "t.txt", block_size=8192)), tok, config)


def test_chat_loss_on_assistant_turns_only(tiny_gpt2_lm, tmp_path):
    conv = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "the early bird"},
            {"role": "user", "content": "more"}, {"role": "assistant", "content": "catches the worm"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conv}] * 4)
    task, cfg, data, tok = _prepared(tiny_gpt2_lm, path, validation_file=str(path))
    split = task.tokenize(tok, data, cfg, 64)["train"]
    ids, labels = split.row(0).tolist(), split.token_labels[:split.offsets[1]].tolist()
    trained = tok.decode([t for t, lab in zip(ids, labels) if lab != -100])
    assert trained == "the early bird<|endoftext|>catches the worm<|endoftext|>"


def test_chat_errors_are_one_line(tiny_llama, tmp_path, capsys):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    line = one_line_error(capsys, ["train", *_cfg(tiny_llama, path)])
    assert "no assistant turn" in line and "chat.jsonl" in line
    path = write_jsonl(tmp_path / "chat2.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                                {"role": "assistant", "content": "yo"}]}] * 4)
    line = one_line_error(capsys, ["train", *_cfg(tiny_llama, path, output_dir=tmp_path / "o",
                                                  validation_file=str(path))])
    assert "chat template" in line  # tiny_llama's tokenizer has none


@pytest.fixture(scope="module")
def memorised_run(tiny_gpt2_lm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm_runs")
    path = folder / "corpus.txt"
    path.write_text("\n\n".join(LM_CORPUS) + "\n")  # five documents, one packed block
    return tuneforge.train(None, _cfg(tiny_gpt2_lm, path, folder / "run", validation_file=str(path),
                                      learning_rate=3e-3, max_steps=150, eval_strategy="steps", eval_steps=50,
                                      save_strategy="no", block_size=64, max_new_tokens=8))


def test_tiny_model_memorises_and_generates_the_continuation(memorised_run):
    assert memorised_run.metrics["eval"]["perplexity"] < 2.0
    out = tuneforge.load(memorised_run.path).predict(["a stitch in", "the early bird"])
    assert out[0]["generated_text"].startswith(" time saves nine")
    assert out[1]["generated_text"].startswith(" catches the worm")


def test_cli_generate_and_saved_generation_config(memorised_run, capsys):
    assert main(["generate", str(memorised_run.path), "--prompt", "all that glitters"]) == 0
    assert capsys.readouterr().out.startswith(" is not gold")
    gen = json.loads((memorised_run.path / "generation_config.json").read_text())
    assert gen["max_new_tokens"] == 8 and gen.get("do_sample", False) is False
    info = json.loads((memorised_run.path / "data_report.json").read_text())
    assert info["splits"]["train"]["truncated_percent"] == 0.0


def test_cli_evaluate_a_causal_lm_run_on_a_text_file(memorised_run, capsys):
    """`tuneforge evaluate` reads the file in the run's data format and packs it as training did: on the run's
    own validation text it reproduces the run's validation loss."""
    corpus = memorised_run.path.parent / "corpus.txt"
    assert main(["evaluate", str(memorised_run.path), "--data", str(corpus), "--name", "again"]) == 0
    saved = json.loads((memorised_run.path / "eval" / "again" / "metrics.json").read_text())
    assert saved["loss"] == pytest.approx(memorised_run.metrics["eval"]["loss"], rel=1e-3, abs=1e-4)
    assert saved["perplexity"] < 2.0 and saved["tokens"] > 0
    assert (memorised_run.path / "eval" / "again" / "error_analysis.json").exists()


def test_metric_for_best_model_perplexity_keeps_the_lowest(tiny_gpt2_lm, tmp_path):
    """The direction comes from the task's declaration (perplexity: lower is better), not from the name."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(LM_CORPUS) + "\n")
    run = tuneforge.train(None, _cfg(tiny_gpt2_lm, path, tmp_path / "run", validation_file=str(path),
                                     learning_rate=3e-3, max_steps=30, eval_strategy="steps", eval_steps=10,
                                     save_strategy="no", block_size=64, metric_for_best_model="perplexity",
                                     baselines="false"))
    evals = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r["eval_perplexity"] for r in evals if "eval_perplexity" in r}
    assert len(set(evals.values())) > 1  # the evaluations differ, so the direction matters
    best_step = min(evals, key=evals.get)
    assert run.metrics["best_step"] == best_step != min(evals)  # not the first (highest) one
    assert run.metrics["eval"]["perplexity"] == pytest.approx(evals[best_step])


def test_error_analysis_loss_per_document_matches_a_single_document_pass(tiny_gpt2_lm, tmp_path):
    """Unpacked documents: each row's recorded loss equals the loss of that document evaluated alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.engine.evaluation import evaluate_with_analysis

    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(LM_CORPUS) + "\n")
    task = get_task("causal_lm")
    cfg = load_config(None, _cfg(tiny_gpt2_lm, path, validation_file=str(path), packing="false", block_size=64,
                                 preprocessing_cache_dir=str(tmp_path / "cache")))
    data = task.prepare_data(cfg)
    tok = AutoTokenizer.from_pretrained(tiny_gpt2_lm)
    tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_lm).eval()
    splits = task.tokenize(tok, data, cfg, 64)
    metrics, analysis = evaluate_with_analysis(model, tok, task, splits["validation"], data, "validation", cfg,
                                               torch.device("cpu"))
    worst = analysis["highest_loss"]
    assert len(worst) == len(LM_CORPUS)
    assert [w["loss"] for w in worst] == sorted((w["loss"] for w in worst), reverse=True)
    split = splits["validation"]
    for w in worst:
        batch = task.collate(split, np.array([w["row"]]), tok.pad_token_id)
        with torch.no_grad():
            alone = float(task.loss(model, batch)) / batch["num_items"]
        assert abs(alone - w["loss"]) < 1e-3
        assert w["text"].strip() in LM_CORPUS
    slices = analysis["length_slices"]
    total = sum(s["rows"] for s in slices)
    assert total == len(LM_CORPUS) and all(s["loss"] is None or s["loss"] > 0 for s in slices)
    assert abs(metrics["loss"] - sum(w["loss"] * w["tokens"] for w in worst) / metrics["tokens"]) < 1e-4
