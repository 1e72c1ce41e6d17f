"""Distributed strategies through accelerate: DDP as before, FSDP2 and DeepSpeed ZeRO-2/3 translated from the
run's config into accelerate plugins, and the two numbers the engine's step changes under each.

>>> from tuneforge.config import load_config
>>> from tuneforge.engine.strategy import deepspeed_config, loss_scale
>>> cfg = load_config(None, ["task=classification", "model_name_or_path=m", "train_file=t.csv",
...                          "strategy=deepspeed", "zero_stage=3", "gradient_accumulation_steps=4"])
>>> ds = deepspeed_config(cfg, "bf16")
>>> ds["zero_optimization"]["stage"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]
(3, 16, 4)
>>> loss_scale("ddp", world=2, accumulation=4), loss_scale("deepspeed", world=2, accumulation=4)
(2.0, 8.0)

Who decides (docs/distributed.md, "Strategies"):
- tuneforge's config wins. A launcher setting (`accelerate launch --config_file ...` exports ACCELERATE_USE_FSDP,
  ACCELERATE_GRADIENT_ACCUMULATION_STEPS, ...) or a passthrough file key (`distributed.fsdp_config` /
  `deepspeed_config`) that contradicts a tuneforge key is a one-line error naming both values, except where the
  tuneforge key was left at its default: then the outside value is adopted and the run says so (`resolve`).
  The files' other keys are merged over the translated settings.
- The accumulation window is the engine's: the Accelerator always counts 1 (ACCELERATE_GRADIENT_ACCUMULATION_STEPS
  never reaches it); DeepSpeed is told the window because it divides the loss by it (`loss_scale`) and clips
  itself (`engine_clips`).
- The training engine drives fsdp (engine/fsdp.py) and deepspeed ZeRO-2/3 (engine/deepspeed.py) (`DRIVEN`);
  what it has not been built or run with is refused in one line (`check_sharded`, `check_deepspeed`), so no run
  trains on a path the engine does not handle.
- fsdp and deepspeed run under a launcher only: on CUDA GPUs (one process or more), and on the CPU over 2 or more
  processes of a gloo group (accelerate applies the plugins only to accelerator groups; the session puts them in
  accelerate's state there, engine/fsdp.py `use_fsdp`, engine/deepspeed.py `use_deepspeed`). LoRA runs under fsdp
  (adapters gathered for checkpoints and the final save) and is refused with deepspeed (a ZeRO model's adapter
  is not saved or merged); deepspeed trains in fp32 only (the only precision run here).

FSDP2's shard groups, and the models accelerate's wrapping cannot take: engine/sharding.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from tuneforge.config.schema import DistributedConfig, RunConfig, TrainingConfig
from tuneforge.engine.sharding import fsdp_plugin_class, fsdp_wrap_classes
from tuneforge.errors import UserError

SHARDED = ("fsdp", "deepspeed")
# the sharded strategies the training engine drives (engine/fsdp.py, engine/deepspeed.py)
DRIVEN: tuple[str, ...] = ("fsdp", "deepspeed")
DOCS = "docs/distributed.md"
SECTION = {"distributed": DistributedConfig, "training": TrainingConfig}
# env vars accelerate writes itself when given a plugin: a later run in this process must not read them as a
# launcher's (name -> value written)
_WRITTEN: dict[str, str] = {}


def _flag(value: str) -> bool | None:
    """A launcher's boolean (FSDP1's sharding strategy names too); None when it says neither."""
    v = value.strip().lower()
    return {"1": True, "true": True, "yes": True, "full_shard": True, "0": False, "false": False, "no": False,
            "shard_grad_op": False, "no_shard": False}.get(v)


def _offload_device(value: str) -> bool:
    if value.lower() not in ("none", "cpu"):
        raise UserError(f"distributed.cpu_offload: the launcher's offload device {value} is not built (tuneforge "
                        "offloads to the CPU); put NVMe offload in distributed.deepspeed_config")
    return value.lower() == "cpu"


def _number(kind: type) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            return kind(value)
        except ValueError:
            return None  # "auto": no opinion
    return parse


# what a launcher exports that a tuneforge key also says: env var -> (section, key, parser; None = no opinion)
LAUNCHER: tuple[tuple[str, str, str, Callable[[str], Any]], ...] = (
    ("ACCELERATE_USE_FSDP", "distributed", "strategy", lambda v: "fsdp" if _flag(v) else None),
    ("ACCELERATE_USE_DEEPSPEED", "distributed", "strategy", lambda v: "deepspeed" if _flag(v) else None),
    ("ACCELERATE_DEEPSPEED_CONFIG_FILE", "distributed", "deepspeed_config", lambda v: None if v == "none" else v),
    ("ACCELERATE_DEEPSPEED_ZERO_STAGE", "distributed", "zero_stage", _number(int)),
    ("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "distributed", "cpu_offload", _offload_device),
    ("FSDP_RESHARD_AFTER_FORWARD", "distributed", "fsdp_reshard_after_forward", _flag),
    ("FSDP_OFFLOAD_PARAMS", "distributed", "cpu_offload", _flag),
    ("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "training", "gradient_accumulation_steps", _number(int)),
    ("ACCELERATE_GRADIENT_CLIPPING", "training", "max_grad_norm", _number(float)),
)
# passthrough keys that are tuneforge keys: (file key path, section, key); precision is checked, never adopted
FSDP_KEYS = ((("reshard_after_forward",), "distributed", "fsdp_reshard_after_forward"),
             (("cpu_offload",), "distributed", "cpu_offload"))
DEEPSPEED_KEYS = ((("train_micro_batch_size_per_gpu",), "training", "per_device_train_batch_size"),
                  (("gradient_accumulation_steps",), "training", "gradient_accumulation_steps"),
                  (("gradient_clipping",), "training", "max_grad_norm"),
                  (("zero_optimization", "stage"), "distributed", "zero_stage"))
FSDP_RENAMES = {"offload_params": "cpu_offload", "transformer_layer_cls_to_wrap": "transformer_cls_names_to_wrap"}
# accelerate-config keys FSDP2 has no use for (accelerate warns, or raises for forward_prefetch)
FSDP1_ONLY = ("use_orig_params", "sync_module_states", "forward_prefetch", "backward_prefetch", "limit_all_gathers")


def _default(section: str, key: str) -> Any:
    return next(f.default for f in fields(SECTION[section]) if f.name == key)


def _same(key: str, a: Any, b: Any) -> bool:
    if key.endswith("_config") and isinstance(a, str) and isinstance(b, str):
        return os.path.realpath(a) == os.path.realpath(b)
    return a == b


def _agree(cfg: RunConfig, section: str, key: str, theirs: Any, source: str, notes: list[str],
           adopt: tuple[str, ...]) -> RunConfig:
    """cfg with `theirs` adopted where section.key is at its default (and its section in `adopt`); a one-line
    error where it disagrees."""
    ours = getattr(getattr(cfg, section), key)
    if theirs is None or _same(key, ours, theirs):
        return cfg
    if ours != _default(section, key) or section not in adopt:
        raise UserError(f"{section}.{key}: {source} says {theirs!r}, tuneforge's config says {ours!r}; make them "
                        f"agree (tuneforge's explicit value is never overridden: {DOCS})")
    notes.append(f"{section}.{key}: {theirs!r} from {source} (tuneforge's config left the default {ours!r})")
    return replace(cfg, **{section: replace(getattr(cfg, section), **{key: theirs})})


def read_mapping(path: str, key: str) -> dict[str, Any]:
    """A JSON or YAML file's top-level mapping; one-line errors naming `key` and the file."""
    import yaml

    text = Path(path).expanduser().read_text(encoding="utf-8")
    try:
        loaded = json.loads(text) if path.lower().endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise UserError(f"{key}: {path} is not valid {'JSON' if path.endswith('.json') else 'YAML'} "
                        f"({str(err).splitlines()[0][:120]})") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{key}: {path} must hold a mapping of keys to values, got {type(loaded).__name__}")
    return loaded


def fsdp_file(path: str) -> dict[str, Any]:
    """An accelerate FSDP config (a whole `accelerate config` file or its fsdp_config section) as plugin keys."""
    from dataclasses import fields as plugin_fields

    from accelerate.utils import FullyShardedDataParallelPlugin

    raw = read_mapping(path, "distributed.fsdp_config")
    raw = raw.get("fsdp_config", raw)
    out = {}
    for key, value in raw.items():
        name = str(key).removeprefix("fsdp_")
        name = FSDP_RENAMES.get(name, name)
        out[name] = value.split(",") if name == "transformer_cls_names_to_wrap" and isinstance(value, str) else value
    if str(out.pop("version", 2)) != "2":
        raise UserError(f"distributed.fsdp_config: {path} asks for FSDP{raw.get('fsdp_version', raw.get('version'))}; "
                        "tuneforge builds FSDP2 only: set fsdp_version: 2")
    sharding = out.pop("sharding_strategy", None)  # FSDP1's spelling of reshard_after_forward
    if sharding is not None and "reshard_after_forward" not in out:
        out["reshard_after_forward"] = _flag(str(sharding))
    for name in FSDP1_ONLY:
        out.pop(name, None)
    known = {f.name for f in plugin_fields(FullyShardedDataParallelPlugin)}
    unknown = sorted(set(out) - known)
    if unknown:
        raise UserError(f"distributed.fsdp_config: {path}: unknown key {unknown[0]!r} (accelerate's "
                        "FullyShardedDataParallelPlugin fields, with or without the fsdp_ prefix)")
    if isinstance(out.get("auto_wrap_policy"), str):
        out["auto_wrap_policy"] = out["auto_wrap_policy"].lower()
    return out


def _nested(mapping: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        mapping = mapping.get(part) if isinstance(mapping, Mapping) else None
    return mapping


def resolve(cfg: RunConfig, env: Mapping[str, str] | None = None,
            adopt: tuple[str, ...] = ("distributed", "training")) -> tuple[RunConfig, list[str]]:
    """The config the run trains with once the launcher's env and the passthrough files are reconciled with it,
    and a line per value adopted from them; only keys of the sections in `adopt` are adopted, the others must
    agree. Idempotent: runs/train.py and start_session may both call it."""
    env = os.environ if env is None else env
    notes: list[str] = []
    for name, section, key, parse in LAUNCHER:
        raw = env.get(name)
        if raw is not None and _WRITTEN.get(name) != raw:
            cfg = _agree(cfg, section, key, parse(raw), f"the launcher's {name}={raw}", notes, adopt)
    d = cfg.distributed
    if d.strategy == "fsdp" and env.get("FSDP_VERSION", "2") != "2":
        raise UserError(f"distributed.strategy: the launcher asks for FSDP{env['FSDP_VERSION']} (FSDP_VERSION); "
                        "tuneforge builds FSDP2 only: set fsdp_version: 2 in the accelerate config")
    if d.fsdp_config and d.strategy == "fsdp":
        file = fsdp_file(d.fsdp_config)
        for path, section, key in FSDP_KEYS:
            cfg = _agree(cfg, section, key, _nested(file, path), d.fsdp_config, notes, adopt)
    if d.deepspeed_config and d.strategy == "deepspeed":
        file = read_mapping(d.deepspeed_config, "distributed.deepspeed_config")
        for path, section, key in DEEPSPEED_KEYS:
            value = _nested(file, path)
            cfg = _agree(cfg, section, key, None if value == "auto" else value, d.deepspeed_config, notes, adopt)
    return cfg, notes


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def check_run(cfg: RunConfig, device_type: str, env: Mapping[str, str] | None = None) -> None:
    """One-line errors for what a strategy cannot do here; nothing for a plain DDP run."""
    env = os.environ if env is None else env
    d, s = cfg.distributed, cfg.distributed.strategy
    only = {"zero_stage": ("deepspeed",), "deepspeed_config": ("deepspeed",), "fsdp_config": ("fsdp",),
            "fsdp_reshard_after_forward": ("fsdp",), "sharded_checkpoints": ("fsdp",), "cpu_offload": SHARDED}
    for key, strategies in only.items():
        if s not in strategies and getattr(d, key) != _default("distributed", key):
            raise UserError(f"distributed.{key}: applies to strategy={' or '.join(strategies)}, and this run's "
                            f"strategy is {s}; remove it or set the strategy ({DOCS})")
    if s not in SHARDED:
        return
    if s not in DRIVEN:
        raise UserError(f"distributed.strategy: {s} is translated ({DOCS}) but the training engine does not drive it "
                        f"yet; use {' or '.join(('ddp',) + DRIVEN)}")
    check_sharded(cfg, device_type, env)


def check_sharded(cfg: RunConfig, device_type: str, env: Mapping[str, str] | None = None) -> None:
    """What fsdp and deepspeed need from the machine, the launcher and the other settings (one-line errors);
    `check_run` applies it to the strategies the engine drives."""
    env = os.environ if env is None else env
    t, s = cfg.training, cfg.distributed.strategy
    if device_type != "cuda" and _world(env) < 2:
        raise UserError(f"distributed.strategy: {s} on the CPU shards over the processes of a launcher, 2 or more "
                        f"(gloo): `tuneforge train --nproc 2 ...` or torchrun; one CPU process has nothing to shard "
                        f"over, use strategy=ddp ({DOCS})")
    if env.get("LOCAL_RANK") is None:
        raise UserError(f"distributed.strategy: {s} needs a launcher, even for one GPU (accelerate applies it only "
                        f"in a process group): `tuneforge train --nproc 1 ...`, torchrun or accelerate launch ({DOCS})")
    if s == "deepspeed" and not deepspeed_installed():
        raise UserError("distributed.strategy: deepspeed is not installed; `pip install deepspeed` (it builds its "
                        "CUDA ops on first use), or use strategy=fsdp")
    for key, searching in (("auto_find_batch_size", t.auto_find_batch_size is True),
                           ("learning_rate", t.learning_rate == "auto")):
        if searching:
            raise UserError(f"training.{key}: its search runs the unsharded model on the main process alone, which "
                            f"strategy={s} exists to avoid; set the value itself ({DOCS})")
    if s == "deepspeed" and t.torch_compile is True:
        raise UserError("training.torch_compile: not built with strategy=deepspeed (tuneforge compiles the module "
                        "in place; DeepSpeed compiles through its engine): set torch_compile=false or strategy=fsdp")
    if s == "deepspeed":
        check_deepspeed(cfg)
    if s == "fsdp" and cfg.distributed.sharded_checkpoints and cfg.lora.enabled:
        raise UserError("distributed.sharded_checkpoints: not built with lora.enabled (a LoRA checkpoint holds "
                        "peft's adapter files, gathered; they are small): set sharded_checkpoints=false")


def check_deepspeed(cfg: RunConfig) -> None:
    """What the engine's DeepSpeed path has not been built or run with (one-line errors; docs/distributed.md)."""
    d = cfg.distributed
    untested = (("lora.enabled", cfg.lora.enabled, "the adapter of a ZeRO model is not saved or merged yet; use "
                 "strategy=ddp: LoRA's trainable weights and their optimizer state are small"),
                ("distributed.cpu_offload", d.cpu_offload, "DeepSpeed swaps in its own CPU Adam (a compiled op) "
                 "and that path has not been run here; use strategy=fsdp with cpu_offload"),
                ("freeze", cfg.freeze.enabled, "frozen parameters have no fp32 master copy in DeepSpeed, which the "
                 "gathered saves read; use strategy=ddp or fsdp"))
    for key, on, why in untested:
        if on:
            raise UserError(f"{key}: not built with strategy=deepspeed ({why})")


def _world(env: Mapping[str, str]) -> int:
    value = env.get("WORLD_SIZE", "1")
    return int(value) if value.isdigit() else 1


def compile_setting(cfg: RunConfig) -> tuple[bool | str, str | None]:
    """training.torch_compile under the strategy: `auto` is off with fsdp and deepspeed (not measured there)."""
    value = cfg.training.torch_compile
    if cfg.distributed.strategy in SHARDED and value == "auto":
        return False, f"torch_compile: off (auto: not measured with strategy={cfg.distributed.strategy})"
    return value, None


def loss_scale(strategy: str, world: int, accumulation: int) -> float:
    """The factor on each micro-batch's loss (already divided by the window's items) before backward. DDP, FSDP2
    and ZeRO average gradients over the processes, so every strategy multiplies by the process count; DeepSpeed
    also divides the loss by its gradient_accumulation_steps in `engine.backward` (accelerate issue #3533), which
    the factor undoes (passing scale_wrt_gas=False to backward would do the same). For deepspeed `accumulation`
    is DeepSpeed's configured window, not the micro-batches of a short last window (it divides by the former;
    the latter gave 1e-2 of weight difference on tests/test_deepspeed.py's ZeRO-3 run)."""
    return float(world * (accumulation if strategy == "deepspeed" else 1))


def engine_clips(strategy: str) -> bool:
    """Whether the engine clips gradients itself: DeepSpeed clips inside its step (gradient_clipping)."""
    return strategy != "deepspeed"


def fsdp_plugin_kwargs(cfg: RunConfig, model: Any = None) -> dict[str, Any]:
    """FullyShardedDataParallelPlugin's arguments; without `model` the block classes are chosen at prepare."""
    d = resolve(cfg, {})[0].distributed  # the file's reshard and offload reconciled with distributed.*
    kwargs: dict[str, Any] = {
        "fsdp_version": 2, "auto_wrap_policy": "transformer_based_wrap",
        "reshard_after_forward": d.fsdp_reshard_after_forward, "cpu_offload": d.cpu_offload,
        # shards per rank in checkpoints; the final model is gathered for save_pretrained
        "state_dict_type": "SHARDED_STATE_DICT",
        # every rank has loaded the model before the session starts, so rank 0 broadcasting it saves nothing
        "cpu_ram_efficient_loading": False,
        "transformer_cls_names_to_wrap": None if model is None else fsdp_wrap_classes(model)}
    return {**kwargs, **(fsdp_file(d.fsdp_config) if d.fsdp_config else {})}


def deepspeed_config(cfg: RunConfig, mixed: str, world: int | None = None) -> dict[str, Any]:
    """The DeepSpeed config dict (stage, micro batch, window, clipping, precision, offload), with the passthrough
    file merged over it; `mixed`: the session's precision (no, fp16, bf16)."""
    cfg = resolve(cfg, {}, adopt=("distributed",))[0]  # the file's stage adopted; micro batch, window, clipping agree
    t, d = cfg.training, cfg.distributed
    off = {"device": "cpu", "pin_memory": True} if d.cpu_offload else {"device": "none"}
    zero: dict[str, Any] = {"stage": d.zero_stage, "offload_optimizer": off, "overlap_comm": True,
                            "contiguous_gradients": True, "reduce_bucket_size": "auto"}
    if d.zero_stage == 3:  # "auto" sizes are filled from the model's hidden size by accelerate at prepare
        zero |= {"offload_param": dict(off), "stage3_prefetch_bucket_size": "auto",
                 "stage3_param_persistence_threshold": "auto", "stage3_gather_16bit_weights_on_model_save": True}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": t.per_device_train_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "train_batch_size": "auto" if world is None else t.per_device_train_batch_size * t.gradient_accumulation_steps
        * world, "gradient_clipping": t.max_grad_norm, "zero_optimization": zero,
        "bf16": {"enabled": mixed == "bf16"},
        "fp16": {"enabled": mixed == "fp16", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
                 "hysteresis": 2, "min_loss_scale": 1},
        "zero_allow_untested_optimizer": True}  # the engine's own AdamW
    if not d.deepspeed_config:
        return config
    file = read_mapping(d.deepspeed_config, "distributed.deepspeed_config")
    for section in ("optimizer", "scheduler"):
        if section in file:
            raise UserError(f"distributed.deepspeed_config: {d.deepspeed_config} defines a {section}; tuneforge "
                            "builds AdamW and its schedule from training.*: remove that section")
    for dtype in ("bf16", "fp16"):
        enabled = _nested(file, (dtype, "enabled"))
        if enabled not in (None, "auto") and bool(enabled) != (mixed == dtype):
            raise UserError(f"distributed.deepspeed_config: {d.deepspeed_config} sets {dtype}.enabled={enabled} but "
                            f"this run's precision is {mixed}; set training.mixed_precision or use \"auto\" there")
    return _merge(config, file)


def _merge(ours: dict[str, Any], theirs: Mapping[str, Any]) -> dict[str, Any]:
    """`theirs` over `ours`, nested mappings key by key; an "auto" of theirs keeps our value."""
    out = dict(ours)
    for key, value in theirs.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif not (value == "auto" and key in out):
            out[key] = value
    return out


def deepspeed_plugin(cfg: RunConfig, mixed: str) -> Any:
    """accelerate's DeepSpeedPlugin from `deepspeed_config`; the loop sets the micro batch, window and
    train_batch_size it trains with before prepare (engine/deepspeed.py `configure`)."""
    from accelerate.utils import DeepSpeedPlugin

    t = cfg.training
    return DeepSpeedPlugin(hf_ds_config=deepspeed_config(cfg, mixed), gradient_accumulation_steps=
                           t.gradient_accumulation_steps, gradient_clipping=t.max_grad_norm,
                           zero_stage=cfg.distributed.zero_stage, zero3_init_flag=False)


def accelerator_kwargs(cfg: RunConfig, cuda: bool, mixed: str, console: Any = None,
                       env: Mapping[str, str] | None = None, model: Any = None) -> dict[str, Any]:
    """The extra `accelerate.Accelerator(...)` arguments of the run's strategy (nothing for a plain DDP run),
    after `resolve` and `check_run`; engine/session.py start_session passes them. training.* values are not
    adopted here (the loop already planned with them): a config resolved earlier (runs/train.py) agrees."""
    env = os.environ if env is None else env
    cfg, notes = resolve(cfg, env, adopt=("distributed",))
    for note in notes if console is not None else ():
        console.print(f"using {note}", highlight=False)
    check_run(cfg, "cuda" if cuda else "cpu", env)
    if env is os.environ:  # what accelerate wrote for an earlier run of this process is no launcher's choice
        for name, value in list(_WRITTEN.items()):
            if os.environ.get(name) == value and name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
                del os.environ[name]
    kwargs: dict[str, Any] = {}
    if env.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS") is not None:
        from accelerate.utils import GradientAccumulationPlugin

        kwargs["gradient_accumulation_plugin"] = GradientAccumulationPlugin(num_steps=1)  # the engine's windows
    strategy = cfg.distributed.strategy
    if strategy == "fsdp":
        kwargs["fsdp_plugin"] = fsdp_plugin_class()(**fsdp_plugin_kwargs(cfg, model))
    elif strategy == "deepspeed":
        if mixed != "no":
            raise UserError(f"training.mixed_precision: {mixed} is not built with strategy=deepspeed yet (DeepSpeed "
                            "casts the model itself and only fp32 has been run here); set mixed_precision=no "
                            f"({DOCS})")
        kwargs["deepspeed_plugin"] = deepspeed_plugin(cfg, mixed)
    if strategy in SHARDED and env is os.environ:
        name = "ACCELERATE_USE_FSDP" if strategy == "fsdp" else "ACCELERATE_USE_DEEPSPEED"
        if name not in os.environ:
            _WRITTEN[name] = "true"  # accelerate sets it when it receives the plugin
    return kwargs
