"""Class weights, automatic batch size (out-of-memory injected), evaluation back-off, memory estimate,
gradient checkpointing, low-precision frozen weights and the printed precision choice."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import base_overrides, one_line_error, toy_rows, write_csv
from rich.console import Console
from test_engine import _grads, assert_window_equals_one_batch

import tuneforge
from tuneforge.config import load_config
from tuneforge.errors import ConfigError
from tuneforge.tasks import get_task

OOM = "CUDA out of memory. Tried to allocate 20.00 MiB (injected by the test)"


# ---- class weights ------------------------------------------------------------------------------------
@pytest.mark.parametrize("groups", [[[0, 1], [2, 3], [4, 5], [6, 7]], [[0, 1, 2], [3, 4, 5, 6], [7]]])
def test_weighted_accumulation_equals_one_weighted_batch(tiny_bert, groups):
    import torch.nn.functional as F

    from tuneforge.engine.step import forward_backward

    task = get_task("classification")
    task.class_weights = [1.0, 3.0, 0.5]
    accelerator, model, split, flat, big = assert_window_equals_one_batch(tiny_bert, task, groups)
    # the window loss is PyTorch's weighted mean: sum(w_y * loss) / sum(w_y)
    batch = task.collate(split, np.asarray(flat), 0)
    expected = F.cross_entropy(task.logits(model, batch), batch["labels"], weight=torch.tensor([1.0, 3.0, 0.5]))
    micro = [task.collate(split, np.asarray(g), 0) for g in groups]
    torch.testing.assert_close(forward_backward(accelerator, model, task, micro), expected.detach(), rtol=1e-5,
                               atol=1e-6)
    task.class_weights = None
    unweighted = _grads(accelerator, model, task, split, groups)
    assert not torch.allclose(unweighted["classifier.weight"], big["classifier.weight"], atol=1e-6)


def test_imbalance_warning_and_auto_weights(tiny_bert, tmp_path, capsys):
    rows = toy_rows(400, 5)
    pos = [r for r in rows if r[1] == "pos"][:190]
    neg = [r for r in rows if r[1] == "neg"][:10]
    train = write_csv(tmp_path / "train.csv", pos + neg)
    cfg = load_config(None, ["task=classification", f"model_name_or_path={tiny_bert}", f"train_file={train}",
                             "class_weights=auto", f"preprocessing_cache_dir={tmp_path / 'cache'}"])
    task = get_task("classification")
    data = task.prepare_data(cfg)
    assert any("strong class imbalance" in w and "class_weights=auto weighs" in w for w in data.report.warnings)
    unweighted = task.prepare_data(dataclasses.replace(cfg, training=dataclasses.replace(cfg.training,
                                                                                         class_weights="none")))
    assert any("consider class_weights=auto" in w for w in unweighted.report.warnings)
    from transformers import AutoTokenizer

    task.tokenize(AutoTokenizer.from_pretrained(tiny_bert), data, cfg, 32)
    counts = data.report.splits["train"].label_counts
    weights = dict(zip(data.label_names, task.class_weights))
    assert weights["neg"] / weights["pos"] == pytest.approx(counts["pos"] / counts["neg"])
    root = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, class_weights="sqrt"))
    root_data = task.prepare_data(root)
    assert any("class_weights=sqrt weighs" in w for w in root_data.report.warnings)
    task.tokenize(AutoTokenizer.from_pretrained(tiny_bert), root_data, root, 32)
    roots = dict(zip(root_data.label_names, task.class_weights))  # square-root re-balancing: 19x rarer, ~4.4x
    assert roots["neg"] / roots["pos"] == pytest.approx((counts["pos"] / counts["neg"]) ** 0.5)
    balanced = write_csv(tmp_path / "balanced.csv", rows)
    cfg2 = load_config(None, [f"{k}={v}" for k, v in {"task": "classification", "model_name_or_path": tiny_bert,
                                                          "train_file": balanced}.items()])
    assert not any("imbalance" in w for w in task.prepare_data(cfg2).report.warnings)


def test_class_weights_unknown_label_is_one_line(tiny_bert, toy_data, tmp_path, capsys):
    err = one_line_error(capsys, ["train", *base_overrides(tiny_bert, toy_data, tmp_path / "x"),
                                  "class_weights={pos: 2, maybe: 1}"])
    assert "unknown label 'maybe'" in err and "neg, pos" in err


def test_label_smoothing_reaches_the_weighted_training_loss_and_not_the_evaluation(tiny_bert, toy_data, tmp_path):
    """label_smoothing_factor=e: each row's loss is (1 - e) x its NLL + e x the mean NLL over all classes, then
    class-weighted; evaluation keeps the plain NLL."""
    task, p = _prepared(tiny_bert, toy_data, tmp_path, "label_smoothing_factor=0.2", "class_weights={pos: 3}")
    assert p.cfg.training.label_smoothing_factor == 0.2 and task.label_smoothing == 0.2
    batch = task.collate(p.splits["train"], np.arange(8), 0)
    with torch.no_grad():
        logp = task.logits(p.model, batch).log_softmax(-1)
        nll = -logp.gather(1, batch["labels"][:, None])[:, 0]
        expected = ((0.8 * nll - 0.2 * logp.mean(-1)) * batch["label_weights"]).sum()
        torch.testing.assert_close(task.loss(p.model, batch), expected)
        assert not torch.allclose(expected, (nll * batch["label_weights"]).sum())
        state = {}
        task.eval_step(p.model, batch, state)
    assert state["loss_sum"] == pytest.approx(float(nll.sum()), rel=1e-5)
    with pytest.raises(ConfigError, match=r"label_smoothing_factor: must be in \[0, 1\)"):
        load_config(None, base_overrides(tiny_bert, toy_data, tmp_path / "r") + ["label_smoothing_factor=1"])


# ---- automatic batch size -----------------------------------------------------------------------------
def _prepared(tiny_bert, toy_data, tmp_path, *extra):
    from tuneforge.runs.train import prepare_training

    cfg = load_config(None, base_overrides(tiny_bert, toy_data, tmp_path / "run", use_cpu=True) + list(extra))
    task = get_task("classification")
    return task, prepare_training(cfg, task, task.prepare_data(cfg), Console(quiet=True))


def test_probe_backs_off_on_injected_oom_longest_rows_first(tiny_bert, toy_data, tmp_path):
    from tuneforge.engine.batch_size import choose_batch_size

    task, p = _prepared(tiny_bert, toy_data, tmp_path, "per_device_train_batch_size=16",
                        "gradient_accumulation_steps=2")
    seen = []
    real_loss = task.loss

    def loss(model, batch):
        seen.append((batch["input_ids"].shape[0], int(batch["attention_mask"].sum(1).max())))
        if batch["input_ids"].shape[0] > 5:
            raise torch.cuda.OutOfMemoryError(OOM)
        return real_loss(model, batch)

    task.loss = loss
    before = {k: v.clone() for k, v in p.model.state_dict().items()}
    cfg, info = choose_batch_size(p.cfg, p.session, task, p.model, p.tokenizer, p.splits["train"],
                                  Console(quiet=True), probe=True)
    assert [b for b, _ in seen] == [16, 8, 4]
    assert seen[0][1] == int(p.splits["train"].lengths.max())  # the longest rows come first
    assert (cfg.training.per_device_train_batch_size, cfg.training.gradient_accumulation_steps) == (4, 8)
    assert info["effective_batch_size"] == info["target_effective_batch_size"] == 32
    assert all(torch.equal(v, before[k]) for k, v in p.model.state_dict().items())  # probing trains nothing
    assert all(p_.grad is None for p_ in p.model.parameters())


def test_other_errors_are_not_taken_for_oom():
    from tuneforge.engine.batch_size import probe_batch_size

    def step(batch_size):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        probe_batch_size(step, 16)


def test_eval_oom_halves_only_the_eval_batch(tiny_bert, toy_data, tmp_path):
    from tuneforge.engine.evaluation import EvalBatch, evaluate

    task, p = _prepared(tiny_bert, toy_data, tmp_path, "per_device_eval_batch_size=32")
    device = p.session.accelerator.device
    real_step = task.eval_step

    def eval_step(model, batch, state):
        if batch["input_ids"].shape[0] > 8:
            raise torch.cuda.OutOfMemoryError(OOM)
        real_step(model, batch, state)

    from tuneforge.data.prepared import PreparedData

    data = PreparedData({}, None, ["neg", "pos"])
    task.eval_step = eval_step
    batch = EvalBatch(p.cfg.training.per_device_eval_batch_size)
    metrics = evaluate(p.model, p.tokenizer, task, p.splits["validation"], data, p.cfg, device, batch=batch)
    assert batch.size == 8  # the run's evaluation batch (engine state), halved twice
    # the config is never changed in place: it still says what was asked for
    assert p.cfg.training.per_device_eval_batch_size == 32 and p.cfg.training.per_device_train_batch_size == 16
    task.eval_step = real_step
    expected = evaluate(p.model, p.tokenizer, task, p.splits["validation"], data, p.cfg, device)
    assert metrics["loss"] == pytest.approx(expected["loss"]) and metrics["accuracy"] == expected["accuracy"]


def test_a_run_records_its_halved_eval_batch_and_keeps_its_config(tiny_bert, toy_data, tmp_path, monkeypatch):
    """The halved evaluation batch is the session's state: run.json records it, run_config.yaml keeps the
    configured size, and every later evaluation of the run starts from the halved one."""
    import yaml

    from tuneforge.tasks.classification import ClassificationTask

    real_step, sizes = ClassificationTask.eval_step, []

    def eval_step(self, model, batch, state):
        sizes.append(batch["input_ids"].shape[0])
        if batch["input_ids"].shape[0] > 8:
            raise torch.cuda.OutOfMemoryError(OOM)
        real_step(self, model, batch, state)

    monkeypatch.setattr(ClassificationTask, "eval_step", eval_step)
    run = tuneforge.train(None, base_overrides(tiny_bert, toy_data, tmp_path / "run", use_cpu=True,
                                               num_train_epochs=2, per_device_eval_batch_size=32))
    assert run.info["eval_batch_size"] == 8
    saved = yaml.safe_load((run.path / "run_config.yaml").read_text())
    assert saved["training"]["per_device_eval_batch_size"] == 32
    assert sizes.count(32) == 1 and sizes.count(16) == 1  # halved once for the whole run, not per evaluation


def test_cpu_uses_the_memory_estimate_and_keeps_the_effective_batch(tiny_bert, toy_data, tmp_path, monkeypatch,
                                                                     capsys):
    from tuneforge.engine import memory

    _, p = _prepared(tiny_bert, toy_data, tmp_path)
    longest = int(p.splits["train"].batch_lengths.max())
    at = {b: memory.estimate_for_model(p.model, "classification", b, longest, "no").total for b in (4, 8)}
    monkeypatch.setattr(memory, "available_memory", lambda device: int((at[4] + at[8]) / 2 / 0.9))
    run = tuneforge.train(None, base_overrides(tiny_bert, toy_data, tmp_path / "auto", auto_find_batch_size=True,
                                               per_device_train_batch_size=16, gradient_accumulation_steps=2,
                                               max_steps=2, eval_strategy="no", save_strategy="no",
                                               load_best_model_at_end=False, mixed_precision="no", use_cpu=True))
    found = run.info["auto_find_batch_size"]
    assert (found["per_device_train_batch_size"], found["gradient_accumulation_steps"]) == (4, 8)
    assert found["method"] == "memory estimate" and run.config.training.gradient_accumulation_steps == 8
    out = capsys.readouterr().out
    assert "memory estimate" in out and "mixed precision: no (fp32) (as configured)" in out
    assert run.info["memory_estimate"]["total"] == memory.estimate_for_model(
        p.model, "classification", 4, longest, "no").total


# ---- memory estimate ----------------------------------------------------------------------------------
def test_memory_estimate_scales_and_warns():
    from tuneforge.engine.memory import estimate_training_memory, report_memory

    base = dict(n_params=100_000_000, n_trainable=100_000_000, batch_size=8, seq_len=256, layers=12, hidden=768,
                heads=12)
    e1 = estimate_training_memory(**base)
    e2 = estimate_training_memory(**{**base, "batch_size": 16})
    assert e2.activations == 2 * e1.activations and e2.weights == e1.weights and e2.optimizer == e1.optimizer
    assert e1.weights == 4 * 10**8 and e1.gradients == 4 * 10**8 and e1.optimizer == 8 * 10**8  # AdamW: 2 fp32 states
    frozen = estimate_training_memory(**{**base, "n_trainable": 10_000_000})
    assert frozen.optimizer == e1.optimizer // 10 and frozen.gradients == e1.gradients // 10
    assert estimate_training_memory(**base, gradient_checkpointing=True).activations < e1.activations / 5
    assert estimate_training_memory(**base, mixed_precision="bf16").activations < e1.activations
    lm = estimate_training_memory(**base, vocab=50_000)
    assert lm.activations - e1.activations == 2 * 4 * 8 * 256 * 50_000  # logits and their gradient
    console = Console(record=True, width=200)
    assert report_memory(e1, 10**6, "a tiny fake device", console)
    assert "exceeds the 0.00 GiB available on a tiny fake device" in console.export_text()
    assert not report_memory(e1, 10**12, "a big device", Console(quiet=True))


# ---- gradient checkpointing, dtype, precision ---------------------------------------------------------
def test_gradient_checkpointing_gives_the_same_gradients(tiny_llama):
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from tuneforge.engine.memory import apply_memory_savers, checkpointing

    ids = torch.randint(1, 100, (2, 12), generator=torch.Generator().manual_seed(0))

    def grads(checkpointing):
        model = AutoModelForCausalLM.from_pretrained(tiny_llama)
        cfg = SimpleNamespace(training=SimpleNamespace(gradient_checkpointing=checkpointing),
                              model=SimpleNamespace(torch_dtype="float32"))
        notes = apply_memory_savers(model, cfg, "no")
        model.train()
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        return model, notes, {n: p.grad for n, p in model.named_parameters()}

    plain_model, _, plain = grads(False)
    model, notes, checkpointed = grads(True)

    assert checkpointing(model) and not checkpointing(plain_model)
    assert "gradient checkpointing: on" in notes[0]
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad)


def test_fused_gelu_gives_the_same_outputs_and_gradients(tiny_gpt2_lm):
    """GPT-2's eight-kernel tanh-GELU becomes transformers' one-kernel GELUTanh: same logits and gradients;
    the config keeps its activation name, so the saved model is unchanged."""
    from transformers import AutoModelForCausalLM
    from transformers.activations import NewGELUActivation

    from tuneforge.engine.kernels import fuse_activations

    ids = torch.randint(1, 100, (2, 12), generator=torch.Generator().manual_seed(0))

    def run(fuse):
        model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_lm)
        note = fuse_activations(model) if fuse else None
        out = model(input_ids=ids, labels=ids, use_cache=False)
        out.loss.backward()
        return model, note, out.logits, {n: p.grad for n, p in model.named_parameters()}

    _, _, logits, grads = run(False)
    model, note, fused_logits, fused_grads = run(True)
    assert note.startswith("activations: 2 tanh-GELUs")
    assert not [m for m in model.modules() if isinstance(m, NewGELUActivation)]
    assert model.config.activation_function == "gelu_new"
    assert fuse_activations(model) is None  # nothing left to swap
    torch.testing.assert_close(fused_logits, logits)
    for name, grad in grads.items():
        torch.testing.assert_close(fused_grads[name], grad)


def test_frozen_weights_in_bfloat16_train_with_bf16_autocast(tiny_bert, toy_data, tmp_path, capsys):
    _, p = _prepared(tiny_bert, toy_data, tmp_path, "freeze.bottom_layers=1", "freeze.embeddings=true",
                        "torch_dtype=bfloat16", "mixed_precision=bf16")
    frozen = [q for q in p.model.parameters() if not q.requires_grad and q.ndim >= 2]
    assert frozen and all(q.dtype == torch.bfloat16 for q in frozen)
    assert all(q.dtype == torch.float32 for q in p.model.parameters() if q.requires_grad)
    run = tuneforge.train(None, base_overrides(
        tiny_bert, toy_data, tmp_path / "bf16", **{"freeze.bottom_layers": 1, "torch_dtype": "bfloat16",
                                                   "mixed_precision": "bf16", "max_steps": 3, "eval_strategy": "no",
                                                   "save_strategy": "no", "load_best_model_at_end": False}))
    assert run.info["status"] == "finished"
    assert "frozen weight matrices stored in bfloat16" in capsys.readouterr().out
    _, q = _prepared(tiny_bert, toy_data, tmp_path / "fp32", "freeze.bottom_layers=1", "torch_dtype=bfloat16",
                     "mixed_precision=no")
    assert all(x.dtype == torch.float32 for x in q.model.parameters())  # no bf16 autocast: stays fp32


def test_precision_reasons():
    from tuneforge.engine.precision import explain_precision

    assert "supports bf16" in explain_precision("auto", "bf16", "cuda", True)
    assert "loss scaling" in explain_precision("auto", "fp16", "cuda", False)
    assert "overflows in fp16" in explain_precision("auto", "no", "cuda", False, fp16_safe=False)
    assert explain_precision("bf16", "bf16", "cpu") == "mixed precision: bf16 (as configured)"


def test_eval_oom_retry_does_not_count_error_analysis_rows_twice(tiny_bert, toy_data, tmp_path):
    from tuneforge.data.prepared import PreparedData
    from tuneforge.engine.evaluation import evaluate
    from tuneforge.evaluate.errors import ErrorCollector

    task, p = _prepared(tiny_bert, toy_data, tmp_path, "per_device_eval_batch_size=32")
    split, device = p.splits["validation"], p.session.accelerator.device
    real_step, big_batches = task.eval_step, {"n": 0}

    def eval_step(model, batch, state):  # the first big batch succeeds, the second runs out of memory
        if batch["input_ids"].shape[0] > 8:
            big_batches["n"] += 1
            if big_batches["n"] == 2:
                raise torch.cuda.OutOfMemoryError(OOM)
        real_step(model, batch, state)

    data = PreparedData({}, None, ["neg", "pos"])

    def collector():
        return ErrorCollector("accuracy", split.lengths, 64, describe=lambda r: {"row": r})

    retried, clean = collector(), collector()
    task.eval_step = eval_step
    evaluate(p.model, p.tokenizer, task, split, data, p.cfg, device, errors=retried)
    task.eval_step = real_step
    evaluate(p.model, p.tokenizer, task, split, data, p.cfg, device, errors=clean)
    assert big_batches["n"] > 2  # the failed pass recorded a batch before it ran out of memory and was retried
    assert sum(s["rows"] for s in retried.slices()) == len(split) == sum(s["rows"] for s in clean.slices())


def test_head_learning_rate_applies_to_the_new_head_only(tiny_bert, tmp_path):
    """The parameters the checkpoint lacked (the new classifier) get head_learning_rate on the same schedule;
    every other parameter keeps learning_rate; a LoRA model's copied head is found by its wrapped name."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from tuneforge.config.schema import LoraConfig, ModelConfig, TrainingConfig
    from tuneforge.engine.lora import apply_lora
    from tuneforge.engine.optim import build_optimizer, build_scheduler
    from tuneforge.tasks.loading import load_model

    # the encoder alone (as a pretrained checkpoint ships), so that the classifier is new when loaded for a task
    AutoModelForSequenceClassification.from_pretrained(tiny_bert).bert.save_pretrained(tmp_path / "encoder")

    def fresh():
        return load_model(AutoModelForSequenceClassification, ModelConfig(model_name_or_path=str(tmp_path / "encoder")),
                          num_labels=2)

    def lrs(model, cfg):
        opt = build_optimizer(model, cfg, 1e-4, "cpu")
        ids = {id(p): n for n, p in model.named_parameters()}
        return opt, {ids[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}

    model = fresh()
    assert "classifier.weight" in model.tuneforge_new_keys
    _, same = lrs(model, TrainingConfig(learning_rate=1e-4))
    assert set(same.values()) == {1e-4}
    cfg = TrainingConfig(learning_rate=1e-4, head_learning_rate=1e-3, warmup_steps=0)
    opt, by_name = lrs(model, cfg)
    assert by_name["classifier.weight"] == by_name["classifier.bias"] == 1e-3
    assert {lr for n, lr in by_name.items() if not n.startswith("classifier.")} == {1e-4}
    scheduler = build_scheduler(opt, cfg, total_steps=10)
    for _ in range(5):
        opt.step()
        scheduler.step()
    assert sorted({round(g["lr"], 12) for g in opt.param_groups}) == [5e-5, 5e-4]  # one schedule, two peaks
    lora = apply_lora(fresh(), LoraConfig(enabled=True), "classification", ["classifier.weight", "classifier.bias"])
    lora.tuneforge_new_keys = ["classifier.weight", "classifier.bias"]
    _, by_name = lrs(lora, cfg)
    head = [n for n, lr in by_name.items() if lr == 1e-3]
    assert head and all("classifier" in n for n in head), by_name
    assert torch.is_tensor(next(iter(lora.parameters())))


def test_layerwise_lr_decay_scales_each_layer_and_the_range_test_keeps_it(tiny_bert, tmp_path):
    """layerwise_lr_decay: layer i of L at decay^(L - i), the embeddings at decay^(L + 1), the pooler and head at
    the full rate, all on one schedule; a model without numbered layers is refused in one line (the range test:
    tests/test_lr_finder.py)."""
    import pytest as _pytest
    from transformers import AutoModelForSequenceClassification

    from tuneforge.config.schema import TrainingConfig
    from tuneforge.engine.optim import build_optimizer, build_scheduler, decay_note
    from tuneforge.errors import ConfigError

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    layers = model.config.num_hidden_layers
    cfg = TrainingConfig(learning_rate=1e-3, layerwise_lr_decay=0.5, warmup_steps=0)
    opt = build_optimizer(model, cfg, 1e-3, "cpu")
    ids = {id(p): n for n, p in model.named_parameters()}
    by_name = {ids[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}
    assert len(by_name) == len(ids)  # every parameter in exactly one group
    assert by_name["classifier.weight"] == by_name["bert.pooler.dense.weight"] == 1e-3
    for i in range(layers):
        assert by_name[f"bert.encoder.layer.{i}.output.dense.weight"] == _pytest.approx(1e-3 * 0.5 ** (layers - i))
    assert by_name["bert.embeddings.word_embeddings.weight"] == _pytest.approx(1e-3 * 0.5 ** (layers + 1))
    assert decay_note(opt, cfg) == (f"layer-wise learning-rate decay 0.5: {layers + 2} rates, peak "
                                    f"{1e-3 * 0.5 ** (layers + 1):.2g} (embeddings) to 0.001")
    plain = build_optimizer(model, TrainingConfig(learning_rate=1e-3), 1e-3, "cpu")
    assert {g["lr"] for g in plain.param_groups} == {1e-3} and len(plain.param_groups) == 2  # off: as before
    scheduler = build_scheduler(opt, cfg, total_steps=10)
    for _ in range(5):
        opt.step()
        scheduler.step()
    halved = {ids[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}
    assert all(halved[n] == _pytest.approx(by_name[n] / 2) for n in by_name)  # one schedule for every layer
    with _pytest.raises(ConfigError, match="layerwise_lr_decay: this model has no numbered layers"):
        build_optimizer(torch_linear(), cfg, 1e-3, "cpu")
    with _pytest.raises(ConfigError, match=r"layerwise_lr_decay: must be in \(0, 1\]"):
        TrainingConfig(layerwise_lr_decay=1.5)


def torch_linear():
    import torch

    return torch.nn.Sequential(torch.nn.Linear(2, 2))
