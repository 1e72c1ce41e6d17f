"""engine/strategy.py, engine/sharding.py and the memory estimate per strategy: the translation of distributed.* and
training.* into accelerate's FSDP2 / DeepSpeed plugins, passthrough files, launcher settings, the CPU refusal and
the loss-scale arithmetic. CPU only, no process group, no training (tiny models built from configs)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as T

from tuneforge.config import load_config
from tuneforge.config.schema import DistributedConfig
from tuneforge.engine import strategy
from tuneforge.engine.memory import estimate_for_model, estimate_training_memory
from tuneforge.engine.sharding import block_classes, check_fsdp_model, fsdp_plugin_class, tied_modules
from tuneforge.engine.strategy import (
    accelerator_kwargs,
    check_run,
    check_sharded,
    compile_setting,
    deepspeed_config,
    deepspeed_plugin,
    engine_clips,
    fsdp_plugin_kwargs,
    loss_scale,
    resolve,
)
from tuneforge.errors import ConfigError, UserError

LAUNCHED = {"LOCAL_RANK": "0"}  # what torchrun / accelerate launch / `--nproc 1` set, even for one GPU


def cfg(*overrides: str):
    return load_config(None, ["task=classification", "model_name_or_path=m", "train_file=t.csv", *overrides])


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    # the FSDP plugin writes FSDP_CPU_RAM_EFFICIENT_LOADING into os.environ; restored after each test
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "False")
    for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_GRADIENT_ACCUMULATION_STEPS"):
        monkeypatch.delenv(name, raising=False)


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text, text
    return text


def tiny(kind: str):
    torch.manual_seed(0)
    if kind == "bert":
        return T.BertForSequenceClassification(T.BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2,
                                                            num_attention_heads=2, intermediate_size=32))
    if kind == "bert_mlm":
        return T.BertForMaskedLM(T.BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2,
                                              num_attention_heads=2, intermediate_size=32))
    if kind == "gpt2":
        return T.GPT2LMHeadModel(T.GPT2Config(vocab_size=100, n_embd=16, n_layer=2, n_head=2, n_positions=32))
    if kind == "t5":
        return T.T5ForConditionalGeneration(T.T5Config(vocab_size=100, d_model=16, d_kv=8, d_ff=32, num_layers=2,
                                                       num_heads=2))
    if kind == "distilbert":
        return T.DistilBertForQuestionAnswering(T.DistilBertConfig(vocab_size=100, dim=16, n_layers=2, n_heads=2,
                                                                   hidden_dim=32))
    raise ValueError(kind)


# ---- config -------------------------------------------------------------------------------------------------
def test_config_accepts_the_strategies_and_checks_the_new_fields(tmp_path):
    assert cfg("strategy=fsdp").distributed.strategy == "fsdp"
    d = cfg("strategy=deepspeed", "zero_stage=3", "cpu_offload=true").distributed
    assert (d.zero_stage, d.cpu_offload, d.timeout_minutes, d.fsdp_reshard_after_forward) == (3, True, 30.0, True)
    with pytest.raises(ConfigError, match=r"distributed\.zero_stage: must be 2 .* got 1"):
        cfg("strategy=deepspeed", "zero_stage=1")
    with pytest.raises(ConfigError, match=r"distributed\.deepspeed_config: file not found"):
        cfg("strategy=deepspeed", f"deepspeed_config={tmp_path / 'missing.json'}")
    (tmp_path / "ds.txt").write_text("{}")
    with pytest.raises(ConfigError, match=r"distributed\.deepspeed_config: .* not a \.json"):
        cfg("strategy=deepspeed", f"deepspeed_config={tmp_path / 'ds.txt'}")
    with pytest.raises(ConfigError, match="timeout_minutes"):
        cfg("timeout_minutes=0")


def test_a_key_of_another_strategy_is_refused_not_ignored():
    with pytest.raises(UserError) as err:
        check_run(cfg("zero_stage=3"), "cuda", LAUNCHED)
    assert one_line(err).startswith("distributed.zero_stage: applies to strategy=deepspeed") and "ddp" in str(err.value)
    with pytest.raises(UserError, match=r"distributed\.cpu_offload: applies to strategy=fsdp or deepspeed"):
        check_run(cfg("cpu_offload=true"), "cpu", {})
    with pytest.raises(UserError, match="fsdp_reshard_after_forward: applies to strategy=fsdp"):
        check_run(cfg("strategy=deepspeed", "fsdp_reshard_after_forward=false"), "cuda", LAUNCHED)


# ---- refusals -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_deepspeed_is_driven_and_what_it_is_not_built_with_is_refused_in_one_line(device, monkeypatch):
    monkeypatch.setattr(strategy, "deepspeed_installed", lambda: True)
    two = LAUNCHED | {"WORLD_SIZE": "2"}
    for s in ("fsdp", "deepspeed"):  # both driven (tests/test_fsdp.py, tests/test_deepspeed.py)
        check_run(cfg(f"strategy={s}"), device, two)
    for override, line in (("lora.enabled=true", "lora.enabled: not built with strategy=deepspeed"),
                           ("cpu_offload=true", "distributed.cpu_offload: not built with strategy=deepspeed"),
                           ("freeze.embeddings=true", "freeze: not built with strategy=deepspeed")):
        with pytest.raises(UserError) as err:
            check_run(cfg("strategy=deepspeed", override), device, two)
        assert one_line(err).startswith(line)
    for mixed in ("bf16", "fp16"):  # only fp32 has run under DeepSpeed
        with pytest.raises(UserError) as err:
            accelerator_kwargs(cfg("strategy=deepspeed"), cuda=device == "cuda", mixed=mixed, env=two)
        assert one_line(err).startswith(f"training.mixed_precision: {mixed} is not built with strategy=deepspeed")


def test_start_session_refuses_fsdp_on_one_cpu_process():
    from rich.console import Console

    from tuneforge.engine.session import start_session

    with pytest.raises(UserError, match="fsdp on the CPU shards over the processes of a launcher, 2 or more"):
        start_session(cfg("strategy=fsdp", "use_cpu=true"), Console(quiet=True))


def test_the_cpu_takes_fsdp_and_deepspeed_over_two_processes(monkeypatch):
    monkeypatch.setattr(strategy, "deepspeed_installed", lambda: True)
    for s in ("fsdp", "deepspeed"):
        for env in ({}, LAUNCHED, LAUNCHED | {"WORLD_SIZE": "1"}):  # one CPU process has nothing to shard over
            with pytest.raises(UserError) as err:
                check_sharded(cfg(f"strategy={s}"), "cpu", env)
            assert f"{s} on the CPU shards over the processes of a launcher, 2 or more" in one_line(err)
            assert "--nproc 2" in str(err.value) and "use strategy=ddp" in str(err.value)
        check_sharded(cfg(f"strategy={s}"), "cpu", LAUNCHED | {"WORLD_SIZE": "2"})  # gloo: tests/test_{fsdp,deepspeed}


def test_a_gpu_run_needs_a_launcher_even_for_one_process():
    with pytest.raises(UserError) as err:
        check_sharded(cfg("strategy=fsdp"), "cuda", {})
    assert "needs a launcher" in one_line(err) and "--nproc 1" in str(err.value)
    check_sharded(cfg("strategy=fsdp"), "cuda", LAUNCHED)  # world size 1 under a launcher is fine


def test_lora_with_fsdp_is_accepted_and_with_deepspeed_refused(monkeypatch):
    """LoRA trains under FSDP2 (tests/test_fsdp.py); the adapter of a ZeRO model is still not saved."""
    check_sharded(cfg("strategy=fsdp", "lora.enabled=true"), "cuda", LAUNCHED)
    monkeypatch.setattr(strategy, "deepspeed_installed", lambda: True)
    with pytest.raises(UserError) as err:
        check_sharded(cfg("strategy=deepspeed", "lora.enabled=true"), "cuda", LAUNCHED)
    assert one_line(err).startswith("lora.enabled: not built with strategy=deepspeed")


def test_deepspeed_not_installed_says_pip_install(monkeypatch):
    monkeypatch.setattr(strategy, "deepspeed_installed", lambda: False)
    with pytest.raises(UserError) as err:
        check_sharded(cfg("strategy=deepspeed", "zero_stage=3", "lora.enabled=true"), "cuda", LAUNCHED)
    assert "pip install deepspeed" in one_line(err)
    monkeypatch.setattr(strategy, "deepspeed_installed", lambda: True)
    check_sharded(cfg("strategy=deepspeed", "zero_stage=3"), "cuda", LAUNCHED)
    with pytest.raises(UserError, match=r"lora\.enabled: not built with strategy=deepspeed"):  # not saved yet
        check_sharded(cfg("strategy=deepspeed", "zero_stage=3", "lora.enabled=true"), "cuda", LAUNCHED)


def test_searches_on_the_main_process_and_compile_under_deepspeed_are_refused(monkeypatch):
    monkeypatch.setattr(strategy, "deepspeed_installed", lambda: True)
    for override, key in (("auto_find_batch_size=true", "auto_find_batch_size"),
                          ("learning_rate=auto", "learning_rate")):
        with pytest.raises(UserError, match=rf"training\.{key}: its search runs the unsharded model"):
            check_sharded(cfg("strategy=fsdp", override), "cuda", LAUNCHED)
    check_sharded(cfg("strategy=fsdp", "learning_rate=1.0"), "cuda", LAUNCHED)  # 1.0 == True is not a search
    with pytest.raises(UserError, match=r"training\.torch_compile: not built with strategy=deepspeed"):
        check_sharded(cfg("strategy=deepspeed", "torch_compile=true"), "cuda", LAUNCHED)
    assert compile_setting(cfg("strategy=deepspeed")) == (False, "torch_compile: off (auto: not measured with "
                                                                 "strategy=deepspeed)")
    assert compile_setting(cfg("strategy=fsdp", "torch_compile=true")) == (True, None)
    assert compile_setting(cfg()) == ("auto", None)


# ---- ddp ------------------------------------------------------------------------------------------------------
def test_ddp_adds_nothing():
    assert accelerator_kwargs(cfg(), cuda=False, mixed="no", env={}) == {}
    assert accelerator_kwargs(cfg(), cuda=True, mixed="bf16", env={"WORLD_SIZE": "2", **LAUNCHED}) == {}


def test_the_launchers_accumulation_never_reaches_the_accelerator(monkeypatch):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    c = cfg("gradient_accumulation_steps=4")  # agrees with the launcher: no error
    kwargs = accelerator_kwargs(c, cuda=False, mixed="no")
    assert kwargs["gradient_accumulation_plugin"].num_steps == 1
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        assert Accelerator(cpu=True, gradient_accumulation_steps=1, **kwargs).gradient_accumulation_steps == 1
        assert Accelerator(cpu=True, gradient_accumulation_steps=1).gradient_accumulation_steps == 4  # without it
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


# ---- launcher precedence ---------------------------------------------------------------------------------------
def test_a_launcher_that_contradicts_an_explicit_key_is_one_line_naming_both():
    with pytest.raises(UserError) as err:
        resolve(cfg("strategy=deepspeed"), {"ACCELERATE_USE_FSDP": "true"})
    line = one_line(err)
    assert "ACCELERATE_USE_FSDP=true" in line and "'fsdp'" in line and "'deepspeed'" in line
    with pytest.raises(UserError) as err:
        resolve(cfg("gradient_accumulation_steps=2"), {"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4"})
    assert "training.gradient_accumulation_steps" in one_line(err) and "'4'" not in str(err.value)
    assert "says 4, tuneforge's config says 2" in str(err.value)


def test_a_launcher_value_is_adopted_where_tuneforge_left_the_default():
    env = {"ACCELERATE_USE_FSDP": "true", "FSDP_RESHARD_AFTER_FORWARD": "false", "FSDP_OFFLOAD_PARAMS": "false",
           "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4", "FSDP_VERSION": "2"}
    c, notes = resolve(cfg(), env)
    assert c.distributed.strategy == "fsdp" and c.training.gradient_accumulation_steps == 4
    assert c.distributed.fsdp_reshard_after_forward is False and c.distributed.cpu_offload is False
    assert len(notes) == 3 and any("ACCELERATE_USE_FSDP=true" in n and "'fsdp'" in n for n in notes)
    assert resolve(c, env) == (c, [])  # idempotent: runs/train.py and start_session may both call it
    assert resolve(cfg(), {"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "auto"}) == (cfg(), [])


def test_start_session_adopts_no_training_value_the_loop_did_not_plan_with():
    env = {"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4"}
    with pytest.raises(UserError) as err:  # runs/train.py resolves first; the session only checks it agrees
        accelerator_kwargs(cfg(), cuda=False, mixed="no", env=env)
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS=4 says 4, tuneforge's config says 1" in one_line(err)
    resolved = resolve(cfg(), env)[0]
    assert accelerator_kwargs(resolved, cuda=False, mixed="no", env=env)["gradient_accumulation_plugin"].num_steps == 1


def test_launcher_deepspeed_file_fsdp1_and_what_accelerate_wrote_itself(tmp_path, monkeypatch):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    c, notes = resolve(cfg(), {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(ds)})
    assert len(notes) == 3 and (c.distributed.strategy, c.distributed.deepspeed_config, c.distributed.zero_stage) == \
        ("deepspeed", str(ds), 3)  # the launcher's file, then its stage
    with pytest.raises(UserError, match=r"FSDP1 .*FSDP2 only"):
        resolve(cfg("strategy=fsdp"), {"FSDP_VERSION": "1"})
    with pytest.raises(UserError, match="offload device nvme is not built"):
        resolve(cfg("strategy=deepspeed"), {"ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "nvme"})
    monkeypatch.setitem(strategy._WRITTEN, "ACCELERATE_USE_FSDP", "true")  # an earlier fsdp run of this process
    assert resolve(cfg(), {"ACCELERATE_USE_FSDP": "true"})[0].distributed.strategy == "ddp"


# ---- FSDP2 ---------------------------------------------------------------------------------------------------
def test_fsdp_plugin_fields():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import CPUOffloadPolicy
    from torch.distributed.fsdp.fully_sharded_data_parallel import StateDictType
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    kwargs = accelerator_kwargs(cfg("strategy=fsdp"), cuda=True, mixed="bf16", env=LAUNCHED)
    plugin = kwargs.pop("fsdp_plugin")
    assert kwargs == {} and isinstance(plugin, FullyShardedDataParallelPlugin)
    assert (plugin.fsdp_version, plugin.reshard_after_forward, plugin.cpu_ram_efficient_loading) == (2, True, False)
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT
    assert plugin.auto_wrap_policy is transformer_auto_wrap_policy and plugin.transformer_cls_names_to_wrap is None
    assert not isinstance(plugin.cpu_offload, CPUOffloadPolicy)
    off = accelerator_kwargs(cfg("strategy=fsdp", "cpu_offload=true", "fsdp_reshard_after_forward=false"),
                             cuda=True, mixed="no", env=LAUNCHED)["fsdp_plugin"]
    assert isinstance(off.cpu_offload, CPUOffloadPolicy) and off.reshard_after_forward is False
    # with the model, the block classes are named at once, without BertEmbeddings
    assert fsdp_plugin_kwargs(cfg("strategy=fsdp"), tiny("bert"))["transformer_cls_names_to_wrap"] == ["BertLayer"]


def test_block_classes_leave_out_the_class_that_holds_the_embeddings():
    bert = tiny("bert")
    assert set(bert._no_split_modules) == {"BertEmbeddings", "BertLayer"}
    assert block_classes(bert) == ["BertLayer"]
    assert block_classes(tiny("gpt2")) == ["GPT2Block"]
    assert block_classes(tiny("distilbert")) == ["TransformerBlock"]  # no _no_split_modules: the repeated layers
    plugin = fsdp_plugin_class()(**fsdp_plugin_kwargs(cfg("strategy=fsdp")))
    plugin.set_auto_wrap_policy(bert)  # what accelerate calls at prepare, before sharding
    assert plugin.transformer_cls_names_to_wrap == ["BertLayer"]


def test_tied_parameters_in_one_group_or_refused():
    gpt2 = tiny("gpt2")
    assert tied_modules(gpt2) == [["transformer.wte", "lm_head"]]
    check_fsdp_model(gpt2)  # input and output embeddings: accelerate puts them in one group
    assert tied_modules(tiny("bert")) == []
    for kind, names in (("t5", "shared, encoder.embed_tokens, decoder.embed_tokens, lm_head"),
                        ("bert_mlm", "cls.predictions, cls.predictions.decoder")):
        with pytest.raises(UserError) as err:
            fsdp_plugin_class()(**fsdp_plugin_kwargs(cfg("strategy=fsdp"))).set_auto_wrap_policy(tiny(kind))
        assert names in one_line(err) and "use strategy=deepspeed" in str(err.value)


def test_fsdp_passthrough_file(tmp_path):
    path = tmp_path / "accelerate.yaml"
    path.write_text("distributed_type: FSDP\nfsdp_config:\n  fsdp_version: 2\n  fsdp_reshard_after_forward: false\n"
                    "  fsdp_transformer_layer_cls_to_wrap: BertLayer,BertEmbeddings\n"
                    "  fsdp_activation_checkpointing: true\n  fsdp_use_orig_params: true\n")
    c, notes = resolve(cfg("strategy=fsdp", f"fsdp_config={path}"), {})
    assert c.distributed.fsdp_reshard_after_forward is False and len(notes) == 1  # the default was left: adopted
    kwargs = fsdp_plugin_kwargs(c)
    assert kwargs["transformer_cls_names_to_wrap"] == ["BertLayer", "BertEmbeddings"]  # the file's choice wins
    assert kwargs["activation_checkpointing"] is True and "use_orig_params" not in kwargs
    assert kwargs["fsdp_version"] == 2 and kwargs["state_dict_type"] == "SHARDED_STATE_DICT"
    path.write_text("fsdp_reshard_after_forward: true\n")
    with pytest.raises(UserError, match="says True, tuneforge's config says False"):
        resolve(cfg("strategy=fsdp", f"fsdp_config={path}", "fsdp_reshard_after_forward=false"), {})
    path.write_text("fsdp_version: 1\n")
    with pytest.raises(UserError, match="asks for FSDP1"):
        fsdp_plugin_kwargs(cfg("strategy=fsdp", f"fsdp_config={path}"))
    path.write_text("fsdp_shard_everything: true\n")
    with pytest.raises(UserError, match="unknown key 'shard_everything'"):
        fsdp_plugin_kwargs(cfg("strategy=fsdp", f"fsdp_config={path}"))
    with pytest.raises(UserError, match=r"distributed\.fsdp_config: applies to strategy=fsdp"):
        check_run(cfg(f"fsdp_config={path}"), "cuda", LAUNCHED)


# ---- DeepSpeed -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mixed", ["bf16", "fp16", "no"])
def test_deepspeed_config_translation(mixed):
    c = cfg("strategy=deepspeed", "per_device_train_batch_size=4", "gradient_accumulation_steps=3",
            "max_grad_norm=0.5")
    ds = deepspeed_config(c, mixed)
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["gradient_clipping"]) == \
        (4, 3, 0.5)
    assert ds["zero_optimization"]["stage"] == 2 and "offload_param" not in ds["zero_optimization"]
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "none"}
    assert ds["bf16"]["enabled"] is (mixed == "bf16") and ds["fp16"]["enabled"] is (mixed == "fp16")
    assert ds["train_batch_size"] == "auto" and deepspeed_config(c, mixed, world=2)["train_batch_size"] == 24
    z3 = deepspeed_config(cfg("strategy=deepspeed", "zero_stage=3", "cpu_offload=true"), mixed)["zero_optimization"]
    assert z3["stage"] == 3 and z3["offload_optimizer"]["device"] == "cpu" and z3["offload_param"]["device"] == "cpu"
    assert z3["stage3_gather_16bit_weights_on_model_save"] is True  # the final save gathers the full weights
    assert "optimizer" not in ds and "scheduler" not in ds  # the engine's AdamW and schedule


def test_deepspeed_plugin_takes_the_dict():
    c = cfg("strategy=deepspeed", "zero_stage=3", "gradient_accumulation_steps=2", "max_grad_norm=0.25")
    plugin = deepspeed_plugin(c, "bf16")
    assert (plugin.zero_stage, plugin.gradient_accumulation_steps, plugin.gradient_clipping) == (3, 2, 0.25)
    assert plugin.zero3_init_flag is False and plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 16
    assert plugin.deepspeed_config["bf16"] == {"enabled": True}


def test_deepspeed_passthrough_file(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 4,
                                "zero_optimization": {"stage": 3, "overlap_comm": False, "reduce_bucket_size": "auto",
                                                      "sub_group_size": 1e9}, "bf16": {"enabled": "auto"}}))
    c, notes = resolve(cfg("strategy=deepspeed", f"deepspeed_config={path}"), {})
    assert (c.training.gradient_accumulation_steps, c.distributed.zero_stage, len(notes)) == (4, 3, 2)
    ds = deepspeed_config(c, "bf16")
    assert ds["train_micro_batch_size_per_gpu"] == 16 and ds["gradient_accumulation_steps"] == 4  # auto: tuneforge's
    zero = ds["zero_optimization"]
    assert zero["overlap_comm"] is False and zero["sub_group_size"] == 1e9 and zero["contiguous_gradients"] is True
    assert ds["bf16"] == {"enabled": True}
    with pytest.raises(UserError, match="says 4, tuneforge's config says 2"):
        resolve(cfg("strategy=deepspeed", f"deepspeed_config={path}", "gradient_accumulation_steps=2"), {})
    with pytest.raises(UserError, match=r"sets bf16\.enabled=True but this run's precision is fp16"):
        path.write_text(json.dumps({"bf16": {"enabled": True}}))
        deepspeed_config(cfg("strategy=deepspeed", f"deepspeed_config={path}"), "fp16")
    with pytest.raises(UserError, match="defines a optimizer"):
        path.write_text(json.dumps({"optimizer": {"type": "AdamW"}}))
        deepspeed_config(cfg("strategy=deepspeed", f"deepspeed_config={path}"), "no")
    with pytest.raises(UserError, match="is not valid JSON"):
        path.write_text("{not json")
        deepspeed_config(cfg("strategy=deepspeed", f"deepspeed_config={path}"), "no")


# ---- loss scale and clipping ----------------------------------------------------------------------------------
def test_loss_scale_per_strategy():
    assert [loss_scale(s, world=1, accumulation=8) for s in ("ddp", "fsdp", "deepspeed")] == [1.0, 1.0, 8.0]
    assert [loss_scale(s, world=4, accumulation=3) for s in ("ddp", "fsdp", "deepspeed")] == [4.0, 4.0, 12.0]
    # what reaches the gradient: the engine's loss x the factor, averaged over 4 processes (all strategies), and
    # divided by the window by DeepSpeed: always one process's sum over the global window / its items
    losses, items, world, window = [3.0, 5.0, 7.0], 30.0, 4, 3
    for s in ("ddp", "fsdp", "deepspeed"):
        grad = sum(x / items * loss_scale(s, world, window) / (window if s == "deepspeed" else 1) / world
                   for x in losses)
        assert grad == pytest.approx(sum(losses) / items)
    assert [engine_clips(s) for s in ("ddp", "fsdp", "deepspeed")] == [True, True, False]


# ---- memory estimate -----------------------------------------------------------------------------------------
BASE = dict(n_params=100_000_000, n_trainable=100_000_000, batch_size=8, seq_len=128, layers=12, hidden=768,
            heads=12)
P = 100_000_000


def test_memory_one_process_and_ddp_unchanged():
    today = estimate_training_memory(**BASE)
    assert (today.weights, today.gradients, today.optimizer) == (4 * P, 4 * P, 8 * P)
    assert estimate_training_memory(**BASE, strategy="ddp", world=1) == today
    assert estimate_training_memory(**BASE, mixed_precision="bf16").weights == 4 * P + 2 * P  # autocast's copy
    ddp = estimate_training_memory(**BASE, strategy="ddp", world=4)
    assert ddp.gradients == 8 * P and ddp.weights == 4 * P and ddp.optimizer == 8 * P  # + DDP's buckets


def test_memory_zero_and_fsdp_shard_by_world():
    half = dict(BASE, mixed_precision="bf16", block_params=7_000_000, embedding_params=23_000_000)
    z2 = estimate_training_memory(**half, strategy="deepspeed", world=4, zero_stage=2)
    assert (z2.weights, z2.gradients, z2.optimizer) == (2 * P, 2 * P // 4, 12 * P // 4)  # 2Ψ + (2 + 12)Ψ/N
    z3 = estimate_training_memory(**half, strategy="deepspeed", world=4, zero_stage=3)
    assert (z3.weights, z3.gradients, z3.optimizer) == (2 * P // 4 + 2 * 23_000_000, 2 * P // 4, 12 * P // 4)
    z3_off = estimate_training_memory(**half, strategy="deepspeed", world=4, zero_stage=3, cpu_offload=True)
    assert (z3_off.weights, z3_off.optimizer) == (2 * 23_000_000, 0)
    z2_32 = estimate_training_memory(**BASE, strategy="deepspeed", world=4, zero_stage=2)
    assert (z2_32.weights, z2_32.gradients, z2_32.optimizer) == (4 * P, P, 2 * P)
    fsdp = estimate_training_memory(**half, strategy="fsdp", world=4)
    assert (fsdp.weights, fsdp.gradients, fsdp.optimizer) == (P + 2 * 30_000_000, P, 2 * P)
    kept = estimate_training_memory(**half, strategy="fsdp", world=4, reshard_after_forward=False)
    assert kept.weights == P + 2 * P  # every block stays gathered until its backward
    off = estimate_training_memory(**half, strategy="fsdp", world=4, cpu_offload=True)
    assert (off.weights, off.gradients, off.optimizer) == (2 * 30_000_000, 0, 0)
    for s, stage in (("fsdp", 2), ("deepspeed", 2), ("deepspeed", 3)):
        two, eight = (estimate_training_memory(**half, strategy=s, world=w, zero_stage=stage) for w in (2, 8))
        assert (two.gradients, two.optimizer) == (4 * eight.gradients, 4 * eight.optimizer)
        assert two.activations == eight.activations == z2.activations  # activations are per process, unsharded


def test_memory_for_a_model_by_strategy():
    gpt2 = tiny("gpt2")
    plain = estimate_for_model(gpt2, "causal_lm", 4, 16, "no")
    assert estimate_for_model(gpt2, "causal_lm", 4, 16, "no", distributed=DistributedConfig(), world=1) == plain
    block = sum(p.numel() for p in gpt2.transformer.h[0].parameters())
    wte = gpt2.transformer.wte.weight.numel()  # the tied lm_head counted once
    n = sum(p.numel() for p in gpt2.parameters())
    fsdp = estimate_for_model(gpt2, "causal_lm", 4, 16, "no", distributed=DistributedConfig(strategy="fsdp"), world=2)
    assert fsdp.weights == 4 * n // 2 + 4 * (block + wte) and fsdp.optimizer == 8 * n // 2
    assert fsdp.activations == plain.activations
