"""Layer freezing on BERT, GPT-2, T5 and Llama: frozen tensors bit-identical after training, the rest changed,
tied LM heads follow the stated rule, and frozen tensors never reach the optimizer."""

from __future__ import annotations

import pytest
import torch
from conftest import LM_CORPUS, copy_rows, one_line_error, toy_rows, write_csv, write_jsonl
from safetensors.torch import load_file

import tuneforge
from tuneforge.config.schema import FreezeConfig
from tuneforge.engine.freeze import apply_freeze, block_stacks


def _train(kind, model, tmp_path, **extra):
    out = tmp_path / "run"
    items = {"model_name_or_path": str(model), "output_dir": str(out), "report_to": "none", "seed": 0,
             "preprocessing_cache_dir": str(tmp_path / "cache"), "max_steps": 4, "per_device_train_batch_size": 8,
             "learning_rate": 1e-2, "warmup_steps": 0, "eval_strategy": "no", "save_strategy": "no",
             "load_best_model_at_end": False}
    if kind == "classification":
        items |= {"task": "classification", "train_file": str(write_csv(tmp_path / "t.csv", toy_rows(64, 1)))}
    elif kind == "seq2seq":
        items |= {"task": "seq2seq", "train_file": str(write_jsonl(tmp_path / "t.jsonl", copy_rows(64, 1))),
                  "predict_with_generate": False}
    else:
        path = tmp_path / "corpus.txt"
        path.write_text("\n\n".join(LM_CORPUS * 6) + "\n")
        items |= {"task": "causal_lm", "train_file": str(path), "block_size": 16}
    items |= extra
    return tuneforge.train(None, [f"{k}={v}" for k, v in items.items()])


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def _split(before, after, frozen_prefixes):
    frozen = {k for k in before if any(k.startswith(p) for p in frozen_prefixes)}
    return frozen, set(before) - frozen


def _assert_frozen_and_trained(before, after, frozen, trained):
    assert frozen and trained
    for k in frozen:
        assert torch.equal(before[k], after[k]), f"{k} changed although frozen"
    changed = [k for k in trained if not torch.equal(before[k], after[k])]
    # every trained tensor that receives a gradient moves (a few, like unused pooler weights, may not)
    assert len(changed) >= 0.8 * len(trained), sorted(set(trained) - set(changed))


@pytest.mark.parametrize("fixture,kind,frozen_prefixes", [
    ("tiny_bert", "classification", ["bert.embeddings.", "bert.encoder.layer.0."]),
    ("tiny_gpt2_lm", "causal_lm", ["transformer.wte.", "transformer.wpe.", "transformer.h.0."]),
    ("tiny_llama", "causal_lm", ["model.embed_tokens.", "model.layers.0."]),
    ("tiny_t5", "seq2seq", ["shared.", "encoder.block.0.", "decoder.block.0."]),
])
def test_embeddings_and_bottom_layer_stay_bit_identical(fixture, kind, frozen_prefixes, request, tmp_path, capsys):
    model = request.getfixturevalue(fixture)
    run = _train(kind, model, tmp_path, **{"freeze.embeddings": True, "freeze.bottom_layers": 1})
    before, after = _weights(model), _weights(run.path)
    before = {k: v for k, v in before.items() if k in after}  # a new head is not in the base checkpoint
    frozen, trained = _split(before, after, frozen_prefixes)
    _assert_frozen_and_trained(before, after, frozen, trained)
    out = capsys.readouterr().out
    assert "freeze: embeddings" in out and "bottom 1 of 2 blocks" in out
    assert "trainable" in out
    tied = fixture in ("tiny_gpt2_lm", "tiny_t5")  # GPT-2 and T5 tie the LM head; this Llama does not
    assert ("frozen with the embeddings" in out) == tied


def test_t5_bottom_layers_freeze_each_stack(tiny_t5):
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(tiny_t5)
    assert [name for name, _ in block_stacks(model)] == ["encoder.block", "decoder.block"]
    apply_freeze(model, FreezeConfig(bottom_layers=1))
    for stack in (model.encoder.block, model.decoder.block):
        assert not any(p.requires_grad for p in stack[0].parameters())
        assert all(p.requires_grad for p in stack[1].parameters())
    assert model.shared.weight.requires_grad


def test_all_but_head_trains_only_the_new_classifier(tiny_bert, tmp_path):
    run = _train("classification", tiny_bert, tmp_path, **{"freeze.all_but_head": True})
    before, after = _weights(tiny_bert), _weights(run.path)
    body = {k for k in before if k.startswith("bert.")}
    _assert_frozen_and_trained(before, after, body, {"classifier.weight", "classifier.bias"})


def test_all_but_head_on_tied_gpt2_keeps_the_embeddings_trainable(tiny_gpt2_lm, tmp_path, capsys):
    run = _train("causal_lm", tiny_gpt2_lm, tmp_path, **{"freeze.all_but_head": True})
    before, after = _weights(tiny_gpt2_lm), _weights(run.path)
    assert not torch.equal(before["transformer.wte.weight"], after["transformer.wte.weight"])
    rest = {k for k in before if k != "transformer.wte.weight"}
    for k in rest:
        assert torch.equal(before[k], after[k]), k
    assert "all_but_head keeps it trainable" in capsys.readouterr().out


def test_patterns_freeze_by_name_and_frozen_tensors_skip_the_optimizer(tiny_llama):
    from transformers import AutoModelForCausalLM

    from tuneforge.config.schema import TrainingConfig
    from tuneforge.engine.optim import build_optimizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    apply_freeze(model, FreezeConfig(modules=["*.self_attn.*"]))
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(".self_attn." in n for n in frozen)
    optimizer = build_optimizer(model, TrainingConfig(), 1e-3, "cpu")
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}


def test_bad_requests_are_one_line_errors(tiny_bert, toy_data, tmp_path, capsys):
    base = ["task=classification", f"model_name_or_path={tiny_bert}", f"train_file={toy_data['train']}",
            "report_to=none", f"preprocessing_cache_dir={tmp_path / 'cache'}"]
    err = one_line_error(capsys, ["train", *base, f"output_dir={tmp_path / 'a'}", "freeze.bottom_layers=5"])
    assert "bert.encoder.layer has only 2 blocks" in err
    err = one_line_error(capsys, ["train", *base, f"output_dir={tmp_path / 'b'}", "modules=[nothing.*]"])
    assert "matches no parameter name" in err
    err = one_line_error(capsys, ["train", *base, "lora.enabled=true", "freeze.embeddings=true"])
    assert "LoRA already freezes" in err
