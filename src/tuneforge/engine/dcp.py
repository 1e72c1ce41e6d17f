"""Sharded checkpoints under FSDP2 (`distributed.sharded_checkpoints`): the model's and the optimizer's state
written by every process in parallel through torch.distributed.checkpoint (DCP), each process its own shards,
instead of gathered to full tensors on the main process (engine/fsdp.py), which needs 12 bytes per parameter
(fp32 weights and AdamW's two moments) of CPU memory on one machine.

>>> from pathlib import Path
>>> holds_shards(Path("runs/x/checkpoints/checkpoint-6"))   # doctest: +SKIP
True

- A checkpoint-N/ folder holds `dcp/` (DCP's `.metadata` and one `__<rank>_0.distcp` file per process) in place of
  `model.safetensors` and `optimizer.pt`; the scheduler, scaler, run state and RNG files are the usual ones, and
  the folder is written under `.tmp-checkpoint-N` and renamed by the main process as any checkpoint is.
- The state is torch's `get_state_dict` with sharded options: keys are the parameters' names (the model's under
  "model", the optimizer's state keyed by the same names under "optimizer"), values the processes' DTensor shards.
- Loading (`load_shards`) asks `get_state_dict` for the same structure on the model being resumed and lets DCP
  fill it: on the same process count each process reads its own shards, on another count DCP reads the slices
  each new shard needs (resharding), and a plain model on one process without a process group reads full tensors.
  `set_state_dict` then puts them into the model and optimizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FOLDER = "dcp"  # inside checkpoint-N/


def holds_shards(path: Path) -> bool:
    """Whether checkpoint `path` holds DCP shards (a sharded FSDP2 checkpoint) rather than full files."""
    return (path / FOLDER / ".metadata").exists()


def _inner(optimizer: Any) -> Any:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps torch's


def _options(**kwargs: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=False, cpu_offload=False, **kwargs)


def save_shards(folder: Path, model: Any, optimizer: Any) -> None:
    """Write the model's and the optimizer's sharded state into `folder` (every process, a collective; DCP's
    coordinator, the main process, writes the metadata once all have written their files)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, _inner(optimizer), options=_options())
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(folder / FOLDER))


def _load(state: dict[str, Any], folder: str) -> None:
    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():  # one plain process: DCP warns that it assumes one process, which it is
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        dcp.load(state, checkpoint_id=folder)


def load_shards(path: Path, model: Any, optimizer: Any | None) -> None:
    """Load checkpoint `path`'s shards into `model` (and `optimizer`, when given: a resume; without it the
    weights only, as load_best_model_at_end takes them). Every process of a sharded model calls it (a
    collective); a plain model on one process reads full tensors without a process group."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_state_dict,
        set_model_state_dict,
        set_state_dict,
    )

    folder = str(path / FOLDER)
    if optimizer is None:
        model_state = get_model_state_dict(model, options=_options())
        state = {"model": model_state}
        _load(state, folder)
        set_model_state_dict(model, state["model"], options=_options())
        return
    model_state, optim_state = get_state_dict(model, _inner(optimizer), options=_options())
    state = {"model": model_state, "optimizer": optim_state}
    _load(state, folder)
    set_state_dict(model, _inner(optimizer), model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=_options())


def shard_files(path: Path) -> list[str]:
    """The names of a sharded checkpoint's per-process files (one `.distcp` per process that wrote it)."""
    return sorted(p.name for p in (path / FOLDER).glob("*.distcp"))
