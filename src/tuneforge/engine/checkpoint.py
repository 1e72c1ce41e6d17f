"""Checkpoints: weights as safetensors, run state as JSON, optimizer/scheduler/RNG as plain tensors
(loadable with `weights_only=True`), written to a temporary folder and renamed, with a completeness marker.
Under FSDP2 the weights and the optimizer state are gathered to full tensors first (engine/fsdp.py), so the
files are the same as under DDP and resume under either strategy, on any process count; with
`distributed.sharded_checkpoints` every process writes its own shards instead (engine/dcp.py: a `dcp/` folder in
place of model.safetensors and optimizer.pt, the other files as usual).

>>> from tuneforge.engine.checkpoint import complete_checkpoints
>>> complete_checkpoints("runs/x/checkpoints")   # doctest: +SKIP
[PosixPath('runs/x/checkpoints/checkpoint-100'), PosixPath('runs/x/checkpoints/checkpoint-200')]
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

MARKER = "COMPLETE"
STATE = "trainer_state.json"


def _step_of(path: Path) -> int:
    try:
        return int(path.name.rsplit("-", 1)[-1])
    except ValueError:
        return -1


def complete_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Checkpoint folders that carry the completeness marker, oldest first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("checkpoint-") and (p / MARKER).exists()]
    return sorted(found, key=_step_of)


def clean_stale(folder: str | os.PathLike) -> None:
    """Remove temporary folders left by a save that died half-way."""
    root = Path(folder)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".tmp-checkpoint-"):
                shutil.rmtree(p, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    for file in path.iterdir():
        if file.is_dir():  # a sharded checkpoint's dcp/ (DCP syncs its own files; the folder's entries here)
            _fsync_tree(file)
            _fsync_dir(file)
            continue
        with open(file, "rb") as fh:
            os.fsync(fh.fileno())


def _rng_file(rank: int) -> str:
    return "rng_state.pt" if rank == 0 else f"rng_state_{rank}.pt"


def _save_rng(path: Path) -> None:
    import numpy as np
    import torch

    py_state = random.getstate()
    np_state = np.random.get_state()
    rng = {"python": [py_state[0], list(py_state[1]), py_state[2]],
           "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
           "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, path)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def save_checkpoint(folder: Path, step: int, model: Any, optimizer: Any, scheduler: Any, scaler: Any,
                    state: dict[str, Any], keep: set[Path] | None = None, limit: int | None = None,
                    shards: bool = False) -> Path:
    """Write checkpoint-`step` (then rotate to `limit`, never deleting `keep` or the new one). Called by every
    process of a distributed run: each writes its own RNG state, the main process everything else (the
    weights and optimizer state are the same on every process under DDP; under FSDP2 every process first takes
    part in gathering them to the main process). `shards` (an FSDP2 model, distributed.sharded_checkpoints): every
    process writes its own shards of the weights and optimizer state (engine/dcp.py) into the temporary folder
    before the main process writes the rest and renames it."""
    from tuneforge.engine import deepspeed as ds
    from tuneforge.engine.distributed import current
    from tuneforge.engine.fsdp import full_model_state, full_optimizer_state, sharded

    procs = current()
    shards = shards and sharded(model)
    gathered: Any = None
    if sharded(model) and not shards:
        gathered = (full_model_state(model), full_optimizer_state(model, optimizer))
    if ds.zero_optimizer(optimizer):  # DeepSpeed: full fp32 weights and AdamW state, gathered to the main process
        gathered = (ds.full_model_state(model), ds.full_optimizer_state(optimizer))
    final = folder / f"checkpoint-{step}"
    tmp = folder / f".tmp-checkpoint-{step}"

    def fail(err: OSError) -> UserError:
        shutil.rmtree(tmp, ignore_errors=True)
        return UserError(f"could not write checkpoint {final}: {err.strerror or err}; "
                         "free disk space or choose another output_dir (the previous checkpoint is intact)")

    def prepare() -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        except OSError as err:
            raise fail(err) from None

    def own_rng() -> None:
        try:
            _save_rng(tmp / _rng_file(procs.rank))
        except OSError as err:
            raise fail(err) from None

    def own_shards() -> None:
        from torch.distributed.checkpoint.api import CheckpointException

        from tuneforge.engine.dcp import save_shards

        try:
            save_shards(tmp, model, optimizer)
        except (OSError, CheckpointException) as err:  # DCP raises one process's failure on all of them
            raise fail(err if isinstance(err, OSError) else OSError(str(err).splitlines()[0][:200])) from None

    procs.on_main(prepare)
    procs.all_ok(own_rng)  # every process's RNG (dropout differs per process), so a resume continues each
    if shards:
        procs.all_ok(own_shards)  # a collective: DCP's coordinator writes the metadata once all have written
    procs.on_main(lambda: _write_main(final, tmp, model, optimizer, scheduler, scaler, state, fail,
                                      (keep or set()) | {final}, limit, "shards" if shards else gathered))
    return final


def _write_main(final: Path, tmp: Path, model: Any, optimizer: Any, scheduler: Any, scaler: Any,
                state: dict[str, Any], fail: Any, keep: set[Path], limit: int | None,
                gathered: Any = None) -> None:
    """The main process's part of a save; `gathered`: the full (model, optimizer) state dicts of a sharded model,
    or "shards" when every process has written its shards (the model's config.json is still written)."""
    import torch

    folder = final.parent
    try:
        if gathered == "shards":
            model.config.save_pretrained(tmp)
        elif gathered is None:
            model.save_pretrained(tmp)
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        else:
            model.save_pretrained(tmp, state_dict=gathered[0])
            torch.save(gathered[1], tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        (tmp / STATE).write_text(json.dumps(state, indent=2, default=str))
        (tmp / MARKER).write_text("ok\n")
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(folder)  # the rename itself survives a power cut
    except OSError as err:
        raise fail(err) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    rotate(folder, limit, keep)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_tensors(file: Path) -> Any:
    """torch.load restricted to tensors and plain containers; anything else is refused, never run."""
    import pickle

    import torch

    try:
        return torch.load(file, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise UserError(f"training.resume_from_checkpoint: {file} is not a plain-tensor file "
                        f"({str(err).splitlines()[0][:120]}); refusing to load it: the checkpoint is damaged or "
                        "was not written by tuneforge") from None


def read_state(path: Path) -> dict[str, Any]:
    """The run state of a complete checkpoint (step, epoch, best, the process count and effective batch)."""
    if not (path / MARKER).exists():
        raise UserError(f"training.resume_from_checkpoint: {path} is not a complete checkpoint "
                        f"(no {MARKER} marker); pick another or use 'auto'")
    return json.loads((path / STATE).read_text())


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any, scaler: Any, rank: int = 0,
                    world: int = 1) -> dict[str, Any]:
    """Restore everything saved by save_checkpoint into the given objects (process `rank` of `world` reads
    its own RNG state); return the run state. A checkpoint of another process count (elastic resume: the loop
    keeps its effective batch) has no RNG state for the processes it did not have: they keep the stream they
    were seeded with, and the ones it had left over are unused."""
    import numpy as np
    import torch

    from tuneforge.engine import deepspeed as ds
    from tuneforge.engine.dcp import holds_shards, load_shards
    from tuneforge.engine.fsdp import load_full_optimizer_state, sharded

    run_state = read_state(path)
    if holds_shards(path):  # every process reads its shards, weights and optimizer state (DCP reshards for
        _check_shards_fit(path, model, world)  # another process count)
        load_shards(path, model, optimizer)
    else:
        load_weights(path, model)
        if sharded(model):  # every process reads the full state and keeps its shard
            load_full_optimizer_state(model, optimizer, _load_tensors(path / "optimizer.pt"))
        elif ds.zero_optimizer(optimizer):  # the same under DeepSpeed: each process keeps its partition
            ds.load_full_optimizer_state(optimizer, _load_tensors(path / "optimizer.pt"))
        else:
            optimizer.load_state_dict(_load_tensors(path / "optimizer.pt"))
    scheduler.load_state_dict(_load_tensors(path / "scheduler.pt"))
    if scaler is not None and (path / "scaler.pt").exists():
        scaler.load_state_dict(_load_tensors(path / "scaler.pt"))
    if not (path / _rng_file(rank)).exists() and int(run_state.get("num_processes", 1)) != world:
        return run_state
    rng = _load_tensors(path / _rng_file(rank))
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    np_state = rng["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return run_state


def load_weights(path: Path, model: Any) -> None:
    """Load a checkpoint's safetensors weights into `model`; tied copies may be absent from the file. A model
    sharded by FSDP2 takes the full weights on every process (a collective), each keeping its shard."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from tuneforge.engine import deepspeed as ds
    from tuneforge.engine.dcp import holds_shards, load_shards
    from tuneforge.engine.fsdp import load_full_model_state, sharded

    if holds_shards(path):  # a sharded FSDP2 checkpoint: the weights only (load_best_model_at_end)
        from tuneforge.engine.distributed import current

        _check_shards_fit(path, model, current().world)
        load_shards(path, model, None)
        return
    state_dict: dict[str, Any] = {}
    for file in sorted(path.glob("*.safetensors")):
        try:
            state_dict |= load_file(file)
        except (SafetensorError, OSError) as err:  # a cut or corrupt file
            raise UserError(f"checkpoint {file} cannot be read ({str(err).splitlines()[0][:120]}); it is damaged: "
                            "resume from an earlier checkpoint") from None
    if hasattr(model, "peft_config"):  # a LoRA checkpoint holds the adapter (and new modules) only
        from peft import set_peft_model_state_dict

        from tuneforge.engine.fsdp import load_full_adapter_state

        result = (load_full_adapter_state if sharded(model) else set_peft_model_state_dict)(model, state_dict)
        if result.unexpected_keys:
            raise UserError(f"checkpoint {path} does not match this adapter (unexpected "
                            f"{list(result.unexpected_keys)[:3]})")
        return
    partitioned = ds.managed(model)  # a DeepSpeed engine's module: its fp32 master copy is loaded too
    if sharded(model) or partitioned:
        expected = set(model.state_dict())  # names only: nothing is gathered
        missing, unexpected = [k for k in expected if k not in state_dict], [k for k in state_dict if k not in expected]
    else:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or [k for k in missing if k not in tied]:
        raise UserError(f"checkpoint {path} does not match this model "
                        f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    if sharded(model):
        load_full_model_state(model, state_dict)
    elif partitioned:
        ds.load_full_model_state(model, state_dict)


def _check_shards_fit(path: Path, model: Any, world: int) -> None:
    """A sharded checkpoint loads into an FSDP2 model (any process count) or a plain one on one process (both
    run); anything else has not been run and is refused in one line."""
    from tuneforge.engine import deepspeed as ds
    from tuneforge.engine.fsdp import sharded

    if hasattr(model, "peft_config") or ds.managed(model) or not (sharded(model) or world == 1):
        raise UserError(f"training.resume_from_checkpoint: {path} holds sharded (DCP) checkpoint files, which "
                        "load under strategy=fsdp (any process count) or on one plain process only; resume it "
                        "with strategy=fsdp or on one process")


def rotate(folder: Path, limit: int | None, keep: set[Path]) -> None:
    """Delete the oldest checkpoints beyond `limit`, never one in `keep` (best and newest)."""
    if limit is None:
        return
    found = complete_checkpoints(folder)
    excess = len(found) - max(limit, len(keep & set(found)))
    for path in found:
        if excess <= 0:
            break
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)
            excess -= 1
