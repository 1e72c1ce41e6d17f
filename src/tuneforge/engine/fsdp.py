"""FSDP2 in the engine: what the training loop, evaluation and checkpoints do differently when the model's
parameters are sharded over the processes (accelerate's `fully_shard` turns each into a DTensor).

>>> import torch
>>> averaging(torch.nn.Linear(2, 2), world=2)     # a model prepared on no process group: nothing averages
>>> plain(torch.ones(()))
tensor(1.)

- The model is sharded when accelerate's `prepare` has applied `fully_shard` to it (`sharded`): its class is then
  an FSDPModule, the same object, so the engine keeps using it (no wrapper to unwrap).
- On the CPU accelerate 1.15 never enters its FSDP branch (its state keeps DistributedType.MULTI_CPU for a gloo
  group, so `prepare` would quietly build DDP); `use_fsdp` sets the state to FSDP with the run's plugin,
  as accelerate does for a GPU group, so `prepare`, `no_sync`, `clip_grad_norm_` and `get_state_dict` take their
  FSDP2 paths on the CPU too. torch's `fully_shard` itself runs on a gloo group.
- Full state dicts: the model's (`full_model_state`) and the optimizer's (`full_optimizer_state`) are gathered
  on every process (collectives) into full CPU tensors on the main process, so a checkpoint holds exactly what a
  DDP one holds (safetensors weights, `optimizer.state_dict()` keyed by parameter index) and resumes under either
  strategy, on any process count. Loading gives every process the full file and each keeps its shard.
- LoRA (peft): checkpoints hold the adapter files peft writes from the gathered state; loading them maps peft's
  keys and sets the shards (`load_full_adapter_state`); the final save and merge run on an unsharded copy
  (`plain_peft_copy`) on the main process, so the run folder is a 1-process LoRA run's.
"""

from __future__ import annotations

from typing import Any

import torch


def sharded(model: Any) -> bool:
    """Whether FSDP2 has sharded `model` (accelerate's prepare under strategy=fsdp)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def averaging(model: Any, world: int) -> str | None:
    """The strategy whose gradient averaging over `world` processes `model` is under ("ddp", "fsdp"), or None for
    a model that runs on this process alone (one process, or the unprepared model of the batch-size and
    learning-rate searches)."""
    if world <= 1:
        return None
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return "ddp"
    return "fsdp" if sharded(model) else None


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a collective: every process calls it); any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def total_grad_norm(model: Any) -> torch.Tensor:
    """The 2-norm of all of a sharded model's gradients (a collective), as a plain tensor."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return plain(torch.nn.utils.get_total_norm(grads)) if grads else torch.zeros(())


def use_fsdp(accelerator: Any, plugin: Any, mixed: str) -> None:
    """Put `plugin` in accelerate's state where accelerate did not: a CPU process group (accelerate/state.py
    applies the plugin only to accelerator device types) or a state rebuilt over an FSDP type (a precision
    change between two sessions of one process). Nothing to do for a fresh GPU state."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    state = accelerator.state
    if state.distributed_type == DistributedType.FSDP and getattr(state, "fsdp_plugin", None) is plugin:
        return
    if mixed != "no":
        plugin.set_mixed_precision(mixed)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def forget_fsdp(wanted: bool, cuda: bool) -> bool:
    """Whether accelerate's state, left by an earlier session of this process, disagrees with this session's
    strategy (`wanted`: fsdp) and must be rebuilt; when it was FSDP, the process group's own type is put back
    (accelerate copies it into the rebuilt state, where an FSDP type without its plugin would break `prepare`)."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    if AcceleratorState._shared_state == {}:
        return False
    was = AcceleratorState._shared_state.get("distributed_type") == DistributedType.FSDP
    if was == wanted:
        return False
    shared = PartialState._shared_state
    if shared.get("distributed_type") == DistributedType.FSDP:
        shared["distributed_type"] = DistributedType.MULTI_GPU if cuda else DistributedType.MULTI_CPU
    return True


def _options(**kwargs: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_model_state(model: Any) -> dict[str, torch.Tensor]:
    """The sharded model's full state dict in CPU memory on the main process ({} on the others; a collective).
    Tied parameters (input and output embeddings) share one tensor, so save_pretrained writes it once."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_options(cpu_offload=True))
    if state:
        for names in _tied_names(model):
            for name in names[1:]:
                if name in state and names[0] in state:
                    state[name] = state[names[0]]
    return state


def _tied_names(model: Any) -> list[list[str]]:
    owners: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(name)
    return [names for names in owners.values() if len(names) > 1]


def load_full_model_state(model: Any, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (on every process; the caller has checked its keys, tied copies may be absent)
    into the sharded model, each process keeping its shard (a collective)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, dict(state), options=_options(strict=False))


def _inner(optimizer: Any) -> Any:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps torch's


def _names(model: Any, optimizer: Any) -> list[str]:
    """The name of each parameter the optimizer holds, in its state_dict's index order (torch's own mapping in
    get_optimizer_state_dict: the model's named_parameters)."""
    name_of = {id(p): n.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", "")
               for n, p in model.named_parameters()}
    return [name_of[id(p)] for group in _inner(optimizer).param_groups for p in group["params"]]


def full_optimizer_state(model: Any, optimizer: Any) -> dict[str, Any]:
    """The optimizer's full state on the main process ({} on the others; a collective), keyed by parameter
    index as `optimizer.state_dict()` is under DDP, so the checkpoint file is the same format."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    full = get_optimizer_state_dict(model, _inner(optimizer), options=_options(cpu_offload=True))
    if not full:
        return {}
    # torch lists the names in the optimizer's parameter order: their positions are the indices
    index = {name: i for i, name in enumerate(n for g in full["param_groups"] for n in g["params"])}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]
    return {"state": {index[n]: v for n, v in full["state"].items()}, "param_groups": groups}


def load_full_optimizer_state(model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """Load an index-keyed full optimizer state (a checkpoint's optimizer.pt, DDP's or FSDP2's; on every
    process) into the optimizer of the sharded model, each process keeping its shard."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    names = _names(model, optimizer)
    by_name = {"state": {names[int(i)]: v for i, v in state["state"].items()},
               "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]]}
    set_optimizer_state_dict(model, _inner(optimizer), by_name, options=_options())


def mark_sharded_for_generate(model: Any) -> None:
    """Make transformers' `generate` run in lockstep on a sharded model (synced_gpus: every process keeps
    calling forward until all are done, since each forward gathers weights from all); transformers recognises
    FSDP2 only by this attribute, which its own sharding sets and accelerate's does not."""
    if sharded(model):
        model._is_fsdp_managed_module = True


def describe(model: Any, world: int) -> str | None:
    """The line a sharded run prints once its model is prepared; None for any other."""
    if not sharded(model):
        return None
    from torch.distributed.fsdp import FSDPModule

    groups = sum(isinstance(m, FSDPModule) for m in model.modules())
    return f"fsdp: parameters sharded over {world} process(es), {groups} shard groups (FSDP2)"


def load_full_adapter_state(model: Any, state: dict[str, torch.Tensor]) -> Any:
    """Load a LoRA checkpoint's adapter file (peft's keys, as `set_peft_model_state_dict` takes them) into the
    sharded PeftModel (on every process; a collective); returns peft's load result. peft maps the keys and
    then calls `model.load_state_dict`, which cannot copy plain tensors into DTensor parameters: that one call
    is caught and the mapped dict loaded with `set_model_state_dict` instead, each process keeping its shard."""
    from peft import set_peft_model_state_dict
    from torch.nn.modules.module import _IncompatibleKeys

    mapped: dict[str, torch.Tensor] = {}

    def capture(state_dict: dict[str, torch.Tensor], strict: bool = True, assign: bool = False) -> Any:
        mapped.update(state_dict)
        return _IncompatibleKeys([], [k for k in state_dict if k not in expected])

    expected = set(model.state_dict())  # names only: nothing is gathered
    model.load_state_dict = capture  # an instance attribute over nn.Module's method, removed below
    try:
        result = set_peft_model_state_dict(model, state)
    finally:
        del model.load_state_dict
    if not result.unexpected_keys:
        load_full_model_state(model, mapped)
    return result


def _plain_class(module: Any) -> type:
    """The class `fully_shard` replaced (it swaps in an `FSDP<Class>` subclass of FSDPModule and the class)."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))


def plain_peft_copy(model: Any, state: dict[str, torch.Tensor]) -> Any:
    """An unsharded PeftModel holding `state` (the sharded PeftModel's full state dict, gathered on the main
    process), for peft's own adapter save and merge: the same base class and config, the same LoRA config, built
    on the meta device and filled from `state` (parameters and persistent buffers) and from the sharded model's
    buffers (FSDP2 does not shard buffers; non-persistent ones such as BERT's position_ids are not in `state`).
    Main process only; costs one more full copy of the weights in CPU memory."""
    import copy

    import peft

    base = model.get_base_model()
    with torch.device("meta"):
        twin = _plain_class(base)(base.config)
        twin = peft.get_peft_model(twin, copy.deepcopy(model.peft_config[model.active_adapter]))
    twin.to_empty(device="cpu")
    for name, buffer in model.named_buffers():
        twin.get_buffer(name).copy_(buffer.detach().cpu())
    missing, unexpected = twin.load_state_dict(state, strict=False)
    tied = {n for names in _tied_names(twin) for n in names[1:]}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"the gathered state does not fit the adapter model (missing {sorted(missing)[:3]}, "
                           f"unexpected {sorted(unexpected)[:3]})")
    return twin.eval()
