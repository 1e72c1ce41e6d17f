"""DeepSpeed ZeRO-2/3 in the engine: what the training loop, evaluation and checkpoints do differently when
accelerate's `prepare` has handed the model to a DeepSpeed engine (strategy=deepspeed).

>>> import torch
>>> engine_of(torch.nn.Linear(2, 2)) is None, zero3(torch.nn.Linear(2, 2))
(True, False)

- accelerate's DeepSpeed path owns the step: `accelerator.backward` calls the engine's backward, and on the
  micro-batch where `sync_gradients` is true also its `step` (gradient averaging over the processes, clipping to
  `gradient_clipping`, the optimizer step, zeroing). So the engine's window is DeepSpeed's
  `gradient_accumulation_steps` (`configure`, set from the layout the loop trains with, elastic resume
  included) and `sync_gradients` is set per micro-batch (`boundary`); `optimizer.step()` and `zero_grad()` are
  no-ops of accelerate's wrapper. DeepSpeed divides each micro-batch's loss by its configured window, so the
  loss is multiplied by that window (not by the micro-batches of a short last window: `window`).
- DeepSpeed skips a step whose gradient norm is not finite itself (its overflow check); the non-finite guard
  reads the engine's norm after the step to count and stop (`grad_norm`), and the LR schedule advances as under
  DDP (the guard skips the update, not the schedule).
- On the CPU accelerate 1.16 never enters its DeepSpeed branch (`Accelerator(cpu=True)` keeps a MULTI_CPU
  state, so `prepare` would quietly build DDP); `use_deepspeed` puts the run's plugin in accelerate's state as
  accelerate does for a GPU group. DeepSpeed's CPU accelerator then talks over the gloo group already joined.
- Full state dicts for checkpoints and the final model: every parameter's fp32 master value
  (`safe_get_full_fp32_param`, a collective), and AdamW's moments per parameter
  (`safe_get_full_optimizer_state`), keyed by parameter index like `optimizer.state_dict()`: the files of a
  DDP checkpoint. Loading writes the full values back into the engine's partitions (and the module's weights).
"""

from __future__ import annotations

import sys
from typing import Any

import torch

MOMENTS = ("exp_avg", "exp_avg_sq")  # torch AdamW's per-parameter state besides "step"


def engine_of(model: Any) -> Any:
    """The DeepSpeed engine `model` is (accelerate's prepare under strategy=deepspeed), else None; never imports
    deepspeed for a run that did not."""
    if "deepspeed" not in sys.modules:
        return None
    from deepspeed import DeepSpeedEngine

    return model if isinstance(model, DeepSpeedEngine) else None


def zero3(model: Any) -> bool:
    """Whether `model` (engine or its module) has its parameters partitioned (ZeRO-3): every forward gathers them
    from all processes, so evaluation runs in lockstep."""
    inner = getattr(engine_of(model), "module", model)
    return isinstance(inner, torch.nn.Module) and any(hasattr(p, "ds_id") for p in inner.parameters())


def managed(module: Any) -> bool:
    """Whether `module`'s parameters belong to a DeepSpeed ZeRO optimizer (the unwrapped module of an engine)."""
    return isinstance(module, torch.nn.Module) and any(
        hasattr(p, "ds_id") or hasattr(p, "_hp_mapping") for p in module.parameters())


def use_deepspeed(accelerator: Any, plugin: Any, mixed: str) -> None:
    """Put `plugin` in accelerate's state where accelerate did not (a CPU process group: accelerate/state.py takes
    its DeepSpeed branch only off the CPU). Nothing to do for a GPU state accelerate built itself."""
    import logging
    import warnings

    from accelerate.state import PartialState
    from accelerate.utils import DistributedType
    from deepspeed.accelerator import get_accelerator
    from deepspeed.utils import logger

    from tuneforge.errors import UserError

    logger.setLevel(logging.WARNING)  # its INFO lines (the whole config, per process) would bury the run's own
    # DeepSpeed 0.19.8 calls collectives torch 2.13 deprecated: one FutureWarning each, per process
    warnings.filterwarnings("ignore", r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is "
                            "deprecated", FutureWarning)
    if get_accelerator().device_name() != accelerator.device.type:
        raise UserError(f"distributed.strategy: DeepSpeed chose its {get_accelerator().device_name()} accelerator "
                        f"but this run trains on the {accelerator.device.type}; set DS_ACCELERATOR="
                        f"{accelerator.device.type} in the launcher's environment")
    state = accelerator.state
    if state.distributed_type == DistributedType.DEEPSPEED:
        return
    plugin.set_mixed_precision(mixed)
    plugin.select(_from_accelerator_state=True)
    state.deepspeed_plugins = plugin
    state.distributed_type = DistributedType.DEEPSPEED
    state._mixed_precision = "no"  # DeepSpeed casts the model itself (its bf16 / fp16 sections), as on a GPU
    PartialState._shared_state["distributed_type"] = DistributedType.DEEPSPEED


def configure(accelerator: Any, per_device: int, accumulation: int, world: int) -> None:
    """The batch layout the loop trains with (after an elastic resume too) in the plugin's config, before prepare:
    DeepSpeed checks micro batch x window x processes = train_batch_size and divides the loss by its window."""
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = per_device
    config["gradient_accumulation_steps"] = accumulation
    config["train_batch_size"] = per_device * accumulation * world
    accelerator.gradient_accumulation_steps = accumulation  # what prepare sets it to anyway (with a warning)


def window(model: Any) -> int:
    """DeepSpeed's gradient_accumulation_steps: what its backward divides each micro-batch's loss by."""
    return int(engine_of(model).gradient_accumulation_steps())


def boundary(accelerator: Any, last: bool) -> None:
    """Tell accelerate's DeepSpeed wrapper whether this micro-batch ends the window (then it steps the engine)."""
    accelerator.gradient_state._set_sync_gradients(last)


def grad_norm(model: Any) -> torch.Tensor:
    """The global gradient norm of the step DeepSpeed just took (inf when it skipped it: non-finite gradients;
    0 when it computed none, which leaves the guard the loss)."""
    value = engine_of(model).get_global_grad_norm()
    return torch.as_tensor(0.0 if value is None else float(value), dtype=torch.float32)


def remember_order(optimizer: Any) -> list[list[torch.nn.Parameter]]:
    """The optimizer's parameters per group before DeepSpeed flattens them: the index order of a checkpoint's
    optimizer state (as `optimizer.state_dict()` numbers them under DDP)."""
    return [list(group["params"]) for group in optimizer.param_groups]


def _zero(optimizer: Any) -> Any:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's DeepSpeedOptimizerWrapper -> ZeRO optimizer


def zero_optimizer(optimizer: Any) -> bool:
    """Whether `optimizer` is accelerate's wrapper of a DeepSpeed ZeRO optimizer."""
    return "deepspeed" in sys.modules and type(_zero(optimizer)).__module__.startswith("deepspeed.")


def _names(module: Any) -> dict[str, torch.nn.Parameter]:
    return dict(module.named_parameters(remove_duplicate=False))


def full_model_state(module: Any) -> dict[str, torch.Tensor]:
    """The module's full state dict on the main process ({} on the others; a collective): each parameter's fp32
    master value (what DDP trains and saves), buffers as they are; tied parameters share one tensor."""
    from deepspeed.utils import safe_get_full_fp32_param

    main = torch.distributed.get_rank() == 0
    state: dict[str, torch.Tensor] = {}
    seen: dict[int, torch.Tensor] = {}
    params = _names(module)
    for key in module.state_dict():  # names only under ZeRO-3 (the tensors are placeholders)
        p = params.get(key)
        if p is None:
            if main:
                state[key] = module.get_buffer(key).detach().cpu().clone()
            continue
        if id(p) not in seen:
            value = safe_get_full_fp32_param(p)
            if value is None:
                raise RuntimeError(f"deepspeed: {key} has no fp32 master copy (a frozen parameter)")
            seen[id(p)] = value.detach().cpu().clone()
        if main:
            state[key] = seen[id(p)]
    return state


def load_full_model_state(module: Any, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (every process holds it) into the engine's module and its fp32 master partitions."""
    import deepspeed
    from deepspeed.utils import safe_set_full_fp32_param

    params = list(module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=0):  # ZeRO-3: rank 0's values re-partitioned
        module.load_state_dict(state, strict=False)
    aliases: dict[int, list[str]] = {}
    for key, p in _names(module).items():
        aliases.setdefault(id(p), []).append(key)
    for p in module.parameters():  # a tied parameter's value under whichever of its names the file holds
        key = next((k for k in aliases[id(p)] if k in state), None)
        if key is not None:
            safe_set_full_fp32_param(p, state[key].to(torch.float32))


def _flats(zero: Any) -> list[torch.Tensor]:
    """The flat fp32 partitions AdamW steps: ZeRO-3 keeps them aside (its groups are empty between steps), ZeRO-2
    in AdamW's groups."""
    if hasattr(zero, "fp32_partitioned_groups_flat"):
        return list(zero.fp32_partitioned_groups_flat)
    return [p for group in zero.optimizer.param_groups for p in group["params"]]


def _relink(zero: Any) -> None:
    """ZeRO-2: point every parameter's optimizer-state fragment at AdamW's current state. DeepSpeed 0.19.8 links
    them once, after the first group's first step, so the later groups (AdamW's no-decay group) keep none and
    `safe_get_full_optimizer_state` raises "exp_avg not found"."""
    if hasattr(zero, "_hp_optimizer_states_linked"):
        zero._hp_optimizer_states_linked = False
        zero._lazy_init_hp_params_optimizer_state()


def full_optimizer_state(optimizer: Any) -> dict[str, Any]:
    """AdamW's full state on the main process ({} on the others; a collective), keyed by parameter index like
    `optimizer.state_dict()` under DDP."""
    from deepspeed.utils import safe_get_full_optimizer_state

    _relink(_zero(optimizer))
    inner = _zero(optimizer).optimizer  # the torch AdamW, holding one flat partition per group
    steps = [s["step"] for s in inner.state.values() if "step" in s]
    main = torch.distributed.get_rank() == 0
    out: dict[str, Any] = {"state": {}, "param_groups": []}
    index = 0
    for group, params in zip(inner.param_groups, optimizer.tuneforge_order):
        ids = []
        for p in params:
            moments = {key: safe_get_full_optimizer_state(p, key) for key in MOMENTS} if steps else {}
            if main and steps:
                shape = p.ds_shape if hasattr(p, "ds_shape") else p.shape  # ZeRO-3: the full shape
                out["state"][index] = {"step": steps[0].detach().cpu().clone(),
                                       **{k: v.detach().cpu().clone().reshape(shape) for k, v in moments.items()}}
            ids.append(index)
            index += 1
        out["param_groups"].append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
    return out if main else {}


def load_full_optimizer_state(optimizer: Any, state: dict[str, Any]) -> None:
    """Load an index-keyed full optimizer state (DDP's, FSDP2's or this module's optimizer.pt; every process
    holds it) into the ZeRO optimizer's partitions."""
    from deepspeed.utils import safe_set_full_optimizer_state

    zero = _zero(optimizer)
    inner = zero.optimizer
    saved = {int(k): v for k, v in state["state"].items()}
    if not saved:
        return
    step = next(iter(saved.values()))["step"]
    for group, old in zip(inner.param_groups, state["param_groups"]):
        group.update({k: v for k, v in old.items() if k != "params"})
    for flat in _flats(zero):  # torch AdamW's own layout, created as its first step would
        inner.state[flat] = {"step": torch.as_tensor(step, dtype=torch.float32).clone().to(flat.device),
                             **{k: torch.zeros_like(flat) for k in MOMENTS}}
    _relink(zero)
    index = 0
    for params in optimizer.tuneforge_order:
        for p in params:
            for key in MOMENTS:
                safe_set_full_optimizer_state(p, saved[index][key].to(torch.float32), key)
            index += 1


def describe(model: Any, world: int) -> str | None:
    """The line a DeepSpeed run prints once its model is prepared; None for any other."""
    engine = engine_of(model)
    if engine is None:
        return None
    return (f"deepspeed: ZeRO stage {engine.zero_optimization_stage()} over {world} process(es), "
            f"window {window(model)} micro-batch(es) of {engine.train_micro_batch_size_per_gpu()}")
