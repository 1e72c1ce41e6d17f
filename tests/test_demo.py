"""The offline demos' building blocks, without a full demo run: generated data sets, the bert2bert warm start on
the tiny BERT, and a few seq2seq training steps on it with the packaged demo recipe."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
import torch
from conftest import copy_rows, write_jsonl

import tuneforge
from tuneforge.demo import dataset, summaries
from tuneforge.demo.bert2bert import build_bert2bert

SMALL = {"n_train": 300, "n_validation": 60, "n_test": 60}


def test_summaries_are_deterministic():
    assert summaries.generate(seed=3, **SMALL) == summaries.generate(seed=3, **SMALL)
    assert summaries.generate(seed=3, **SMALL) != summaries.generate(seed=4, **SMALL)


def test_summaries_splits_unique_disjoint_and_shorter():
    splits = summaries.generate()
    texts = {name: [row["text"] for row in rows] for name, rows in splits.items()}
    for name, values in texts.items():
        assert len(set(values)) == len(values), name
    assert not set(texts["train"]) & set(texts["validation"])
    assert not set(texts["train"]) & set(texts["test"])
    assert not set(texts["validation"]) & set(texts["test"])
    for rows in splits.values():
        for row in rows:
            assert len(row["summary"].split()) < len(row["text"].split()), row
            summary = row["summary"]
            assert all(n in row["text"] for n in re.findall(r"\d+", summary)), row  # numbers come from the text
            names = [w.strip(".,()") for w in summary.split()[1:] if w[:1].isupper()]
            assert names and any(n in row["text"] for n in names), row  # so do the names it mentions


def test_lead_baseline_and_demo_files(tmp_path):
    rows = [{"text": "one two three four five", "summary": "x"}]
    assert summaries.lead_baseline(rows, n_words=3) == ["one two three"]
    paths = summaries.write_demo_files(tmp_path, seed=1)
    expected = summaries.generate(seed=1)
    for split, path in paths.items():
        assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == expected[split]


def test_classification_demo_dataset_is_deterministic_without_overlap():
    splits = dataset.generate(seed=0)
    assert splits == dataset.generate(seed=0)
    train = {row["text"] for row in splits["train"]}
    assert not train & {row["text"] for row in splits["test"]}


def test_demo_cli_task_option():
    from tuneforge.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["demo"]).task == "classification"
    assert parser.parse_args(["demo", "--task", "seq2seq"]).task == "seq2seq"
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--task", "translation"])


@pytest.fixture(scope="module")
def tiny_bert2bert(tiny_bert, tmp_path_factory):
    return build_bert2bert(tiny_bert, tmp_path_factory.mktemp("bert2bert") / "model")


def test_bert2bert_reloads_with_special_tokens_and_stops_at_eos(tiny_bert, tiny_bert2bert):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert2bert)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_bert2bert).eval()
    ids = (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)
    for cfg in (model.config, model.generation_config):
        assert (cfg.decoder_start_token_id, cfg.eos_token_id, cfg.pad_token_id) == ids
    inputs = tok(["red cat sun"], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                             max_new_tokens=5)
        assert out.shape[0] == 1 and 2 <= out.shape[1] <= 6 and out[0, 0] == tok.cls_token_id
        model.get_output_embeddings().bias[tok.sep_token_id] = 1e4  # make [SEP] the certain next token
        out = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                             max_new_tokens=5)
    assert out[0].tolist() == [tok.cls_token_id, tok.sep_token_id]  # stopped at EOS
    before = (tiny_bert2bert / "model.safetensors").stat().st_mtime_ns
    assert build_bert2bert(tiny_bert, tiny_bert2bert) == tiny_bert2bert  # complete: not built again
    assert (tiny_bert2bert / "model.safetensors").stat().st_mtime_ns == before


def test_demo_recipe_trains_bert2bert_and_summarizes(tiny_bert2bert, tmp_path):
    data = {"train": write_jsonl(tmp_path / "train.jsonl", copy_rows(48, 1)),
            "validation": write_jsonl(tmp_path / "validation.jsonl", copy_rows(8, 2))}
    recipe = resources.files("tuneforge") / "recipes" / "seq2seq" / "bert2bert_demo.yaml"
    items = {"model_name_or_path": tiny_bert2bert, "train_file": data["train"],
             "validation_file": data["validation"], "output_dir": tmp_path / "run", "max_steps": 3,
             "report_to": "none", "max_target_length": 8, "max_source_length": 64,  # the tiny model's limit
             "preprocessing_cache_dir": tmp_path / "cache"}
    run = tuneforge.train(str(recipe), [f"{k}={v}" for k, v in items.items()])
    assert run.config.task == "seq2seq" and run.config.generation.num_beams == 1
    assert "rougeL" in run.metrics["eval"]
    out = tuneforge.load(run.path).summarize(["red cat sun"])
    assert len(out) == 1 and isinstance(out[0], str)
