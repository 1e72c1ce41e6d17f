"""Engine pieces in isolation: accumulation maths, batching, schedules, precision choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tuneforge.config import load_config
from tuneforge.data.batching import batch_count, batch_order, eval_order, pad_rows
from tuneforge.data.prepared import TokenizedSplit
from tuneforge.engine.optim import build_optimizer, build_scheduler, warmup_steps_for
from tuneforge.engine.precision import resolve_mixed_precision


def _model_and_split(tiny_bert, n=8):
    from conftest import cpu_accelerator
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        ignore_mismatched_sizes=True)
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    rows = [[2, *rng.integers(5, vocab, size=int(n_tok)).tolist(), 3] for n_tok in rng.integers(1, 30, size=n)]
    split = TokenizedSplit.from_lists(rows, labels=rng.integers(0, 3, size=n).tolist())
    return cpu_accelerator(), model, split


def _grads(accelerator, model, task, split, groups):
    from tuneforge.engine.step import forward_backward

    model.zero_grad(set_to_none=True)
    micro = [task.collate(split, np.asarray(g), 0) for g in groups]
    forward_backward(accelerator, model, task, micro)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_window_equals_one_batch(tiny_bert, task, groups):
    """Gradients accumulated over `groups` equal one batch of all their rows; returns what was built."""
    accelerator, model, split = _model_and_split(tiny_bert)
    flat = [i for g in groups for i in g]
    big = _grads(accelerator, model, task, split, [flat])
    accumulated = _grads(accelerator, model, task, split, groups)
    for name, grad in big.items():
        torch.testing.assert_close(accumulated[name], grad, atol=1e-6, rtol=1e-4)
    return accelerator, model, split, flat, big


@pytest.mark.parametrize("groups", [[[0, 1], [2, 3], [4, 5], [6, 7]],  # 2 x 4 = 8
                                    [[0, 1], [2, 3], [4, 5], [6]]])     # short last micro-batch
def test_accumulated_gradients_equal_one_big_batch(tiny_bert, groups):
    from tuneforge.tasks import get_task

    assert_window_equals_one_batch(tiny_bert, get_task("classification"), groups)


def test_naive_per_micro_batch_mean_would_differ(tiny_bert):
    """The control that shows the test above can fail: mean per micro-batch / steps is wrong when uneven."""
    import torch.nn.functional as F

    from tuneforge.tasks import get_task

    task = get_task("classification")
    accelerator, model, split = _model_and_split(tiny_bert)
    groups = [[0, 1], [2, 3], [4, 5], [6]]
    right = _grads(accelerator, model, task, split, groups)
    model.zero_grad(set_to_none=True)
    for g in groups:
        batch = task.collate(split, np.asarray(g), 0)
        (F.cross_entropy(task.logits(model, batch), batch["labels"]) / len(groups)).backward()
    naive = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert not torch.allclose(naive["classifier.weight"], right["classifier.weight"], atol=1e-6)


def test_pad_rows_matches_rows_and_masks():
    rows = [[1, 2, 3, 4, 5], [6], [7, 8]]
    split = TokenizedSplit.from_lists(rows, token_type_ids=[[0, 0, 1, 1, 1], [0], [0, 1]])
    ids, mask, types = pad_rows(split, np.array([2, 0, 1]), pad_id=9, pad_to_multiple_of=8)
    assert ids.shape == (3, 8)
    assert ids[0, :2].tolist() == [7, 8] and ids[0, 2:].tolist() == [9] * 6
    assert ids[1, :5].tolist() == [1, 2, 3, 4, 5] and mask.sum(1).tolist() == [2, 5, 1]
    assert types[1, :5].tolist() == [0, 0, 1, 1, 1] and types[2].sum() == 0


@pytest.mark.parametrize("strategy", ["group_by_length", "random"])
def test_batch_order_covers_every_row_once_and_is_reproducible(strategy):
    lengths = np.random.default_rng(1).integers(5, 500, size=1003)
    a = batch_order(lengths, 16, seed=3, epoch=2, strategy=strategy)
    assert sorted(np.concatenate(a).tolist()) == list(range(1003))
    assert all(len(b) == 16 for b in a[:-1]) or strategy == "group_by_length"
    b = batch_order(lengths, 16, seed=3, epoch=2, strategy=strategy)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = batch_order(lengths, 16, seed=3, epoch=3, strategy=strategy)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_group_by_length_cuts_padding_and_puts_longest_first():
    lengths = np.random.default_rng(2).integers(5, 500, size=4000)

    def padded(batches):
        return sum(len(b) * lengths[b].max() for b in batches)

    grouped = batch_order(lengths, 16, 0, 0, "group_by_length")
    shuffled = batch_order(lengths, 16, 0, 0, "random")
    assert padded(grouped) < 0.7 * padded(shuffled)
    assert lengths[grouped[0]].max() == lengths.max()
    assert sorted(np.concatenate(eval_order(lengths, 64)).tolist()) == list(range(4000))


def test_warmup_ratio_and_steps():
    assert warmup_steps_for(0.1, 250) == 25
    assert warmup_steps_for(40, 250) == 40
    assert warmup_steps_for(500, 100) == 100  # never beyond the run (the guide's 500-step warmup bug)


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_schedule_warms_up_then_follows_its_shape(kind):
    cfg = load_config(None, ["task=classification", "model_name_or_path=m", "train_file=t.csv",
                             f"lr_scheduler_type={kind}", "warmup_steps=0.1", "learning_rate=1e-3"]).training
    model = torch.nn.Linear(4, 4)
    opt = build_optimizer(model, cfg, cfg.learning_rate, "cpu")
    sched = build_scheduler(opt, cfg, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(5e-4) and lrs[10] == pytest.approx(1e-3)
    if kind == "constant":
        assert lrs[-1] == pytest.approx(1e-3)
    else:
        assert lrs[-1] < 1e-4 and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_weight_decay_skips_biases_and_norms():
    cfg = load_config(None, ["task=classification", "model_name_or_path=m", "train_file=t.csv"]).training
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    groups = build_optimizer(model, cfg, 1e-3, "cpu").param_groups
    assert groups[0]["weight_decay"] == 0.01 and [p.ndim for p in groups[0]["params"]] == [2]
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 3


def test_mixed_precision_choice():
    assert resolve_mixed_precision("auto", "cuda", bf16_supported=True) == ("bf16", None)
    assert resolve_mixed_precision("auto", "cuda", bf16_supported=False) == ("fp16", None)
    assert resolve_mixed_precision("auto", "cpu") == ("no", None)
    assert resolve_mixed_precision("auto", "cpu", bf16_supported=True) == ("bf16", None)  # native bf16 CPUs
    assert resolve_mixed_precision("fp16", "cpu")[0] == "no"
    assert resolve_mixed_precision("bf16", "cuda", bf16_supported=False)[0] == "fp16"


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["model", "blocks"])
def test_torch_compile_trains_and_saves_plain_weights(tiny_bert, toy_data, tmp_path, monkeypatch, scope):
    """torch_compile compiles in place (the whole model, or its repeated layers): checkpoints and the final
    model keep plain parameter names; the ragged last batch of each epoch is dropped (320 rows in batches of
    100: 3 steps per epoch), so the compiled graph is not rebuilt for its size."""
    from conftest import base_overrides
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    import tuneforge
    from tuneforge.engine import compiling

    monkeypatch.setattr(compiling, "SCOPE", scope)

    run = tuneforge.train(None, base_overrides(
        tiny_bert, toy_data, tmp_path / "run", torch_compile="true", per_device_train_batch_size=100,
        num_train_epochs=2, mixed_precision="no", eval_strategy="steps", eval_steps=3, save_strategy="steps",
        save_steps=3, load_best_model_at_end="false"))
    steps = [json.loads(x)["step"] for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6 and (run.path / "checkpoints" / "checkpoint-6").is_dir()
    saved = load_file(run.path / "model.safetensors")
    assert not [k for k in saved if "_orig_mod" in k]
    assert not torch.equal(saved["classifier.weight"], load_file(tiny_bert / "model.safetensors")["classifier.weight"])
    AutoModelForSequenceClassification.from_pretrained(run.path)
    from tuneforge.inference import evaluate_run

    # the compiled model's own evaluation agrees with the saved weights evaluated without compilation
    again = evaluate_run(run.path, str(toy_data["validation"]), "again")
    assert again["accuracy"] == pytest.approx(run.metrics["eval"]["accuracy"])


def test_regional_compilation_finds_the_repeated_layers(tiny_bert):
    """"blocks" compiles the outermost lists of same-class layers: BERT's encoder layers, T5's encoder and
    decoder blocks (not the mixed-class sub-layer lists inside a T5 block)."""
    from transformers import AutoModelForSequenceClassification, T5Config, T5ForConditionalGeneration

    from tuneforge.engine.compiling import repeated_blocks

    bert = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    assert repeated_blocks(bert) == list(bert.bert.encoder.layer)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_ff=32, d_kv=4, num_heads=2,
                                             num_layers=2, num_decoder_layers=3))
    assert repeated_blocks(t5) == list(t5.encoder.block) + list(t5.decoder.block)
    assert repeated_blocks(torch.nn.Linear(2, 2)) == []


def test_compile_scope_follows_the_training_shapes(tiny_bert):
    """One length for every row (packed causal LM): the whole model with its loss; varying lengths: each repeated
    layer, so a new length recompiles one layer."""
    from transformers import AutoModelForSequenceClassification

    from tuneforge.engine.compiling import compile_for_training
    from tuneforge.tasks import get_task

    task = get_task("classification")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    loss_fn, note = compile_for_training(model, task, one_length=True)
    assert loss_fn is not task.loss and "whole model" in note
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    loss_fn, note = compile_for_training(model, task, one_length=False)
    assert loss_fn == task.loss and f"each of the {len(model.bert.encoder.layer)} repeated layers" in note


def test_evaluation_runs_compiled_modules_uncompiled():
    """eager() (used around every evaluation) keeps compiled modules from compiling: evaluation lengths vary
    and generation grows them token by token."""
    from torch._dynamo.testing import CompileCounter

    from tuneforge.engine.compiling import eager

    counter = CompileCounter()
    double = torch.compile(lambda x: x * 2, backend=counter)
    with eager():
        assert torch.equal(double(torch.ones(3)), torch.full((3,), 2.0))
    assert counter.frame_count == 0
    double(torch.ones(3))
    assert counter.frame_count == 1


def test_a_session_on_another_device_resets_accelerates_per_process_state():
    """accelerate keeps one device per process; a run asking for another device must not inherit the old one
    (seen on an H100: a GPU run after a use_cpu run in the same process trained on the CPU)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from rich.console import Console

    from tuneforge.engine.session import start_session

    AcceleratorState._reset_state(reset_partial_state=True)  # whatever earlier tests left
    Accelerator(cpu=False)  # a process whose state says "not CPU-only"
    assert PartialState._shared_state.get("_cpu") is False
    cfg = load_config(None, ["task=classification", "model_name_or_path=x", "train_file=x.csv", "use_cpu=true",
                             "mixed_precision=no"])
    session = start_session(cfg, Console(quiet=True))
    assert PartialState._shared_state.get("_cpu") is True and session.accelerator.device.type == "cpu"


@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_count_matches_the_batches_made(drop_last):
    """The loop sizes the schedule with batch_count; a mismatch would end epochs early or run past them."""
    for n in range(1, 40):
        for size in (1, 3, 4, 16):
            batches = batch_order(np.arange(n) + 1, size, 0, 0, drop_last=drop_last)
            assert batch_count(n, size, drop_last) == len(batches)
            assert sum(map(len, batches)) == (n if not drop_last or n < size else n - n % size)


def test_torch_compile_auto_compiles_only_long_gpu_runs_of_measured_tasks():
    from tuneforge.engine.compiling import AUTO_MIN_STEPS, resolve_compile

    assert resolve_compile("auto", "cuda", "causal_lm", AUTO_MIN_STEPS)[0] is True
    assert resolve_compile("auto", "cuda", "classification", 5 * AUTO_MIN_STEPS)[0] is True
    short, note = resolve_compile("auto", "cuda", "classification", AUTO_MIN_STEPS - 1)
    assert short is False and "too few" in note
    assert resolve_compile("auto", "cuda", "seq2seq", 10 * AUTO_MIN_STEPS)[0] is False
    assert resolve_compile("auto", "cpu", "causal_lm", 10 * AUTO_MIN_STEPS) == (False, None)
    assert resolve_compile(True, "cpu", "seq2seq", 1) == (True, None)  # asked for: always honoured
    assert resolve_compile(False, "cuda", "causal_lm", 10 * AUTO_MIN_STEPS) == (False, None)
    cfg = load_config(None, ["task=classification", "model_name_or_path=x", "train_file=x.csv"])
    assert cfg.training.torch_compile == "auto"
    for text, value in (("true", True), ("false", False), ("auto", "auto")):
        assert load_config(None, ["task=classification", "model_name_or_path=x", "train_file=x.csv",
                                  f"torch_compile={text}"]).training.torch_compile == value
