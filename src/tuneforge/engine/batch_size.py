"""Automatic batch size: the largest per-device batch that fits, and accumulation to keep the effective batch.

>>> from tuneforge.engine.batch_size import probe_batch_size
>>> def step(batch_size):                      # pretend anything above 6 runs out of memory
...     if batch_size > 6:
...         raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
>>> probe_batch_size(step, 32)
4

With `auto_find_batch_size: true` the target effective batch is the configured
`per_device_train_batch_size x gradient_accumulation_steps`. Starting from `per_device_train_batch_size`, the
batch is halved until one forward + backward on the *longest* training rows fits (the worst case comes first,
so a later long batch cannot run out of memory mid-epoch); then `gradient_accumulation_steps` becomes
`ceil(target / batch)`. On GPU the test is real (out-of-memory errors are caught, the cache is emptied); on
CPU, where Linux kills the process instead of raising, the batch is the largest whose memory estimate
(`engine/memory.py`) stays under 90% of MemAvailable. Probing changes no weights and no random state.

Evaluation has its own back-off (`run_with_backoff`): an out-of-memory there halves the evaluation batch
only; the training batch never shrinks because of evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tuneforge.errors import UserError


def is_oom(err: BaseException) -> bool:
    import torch
    from accelerate.utils.memory import should_reduce_batch_size

    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, Exception) and should_reduce_batch_size(err)) or "out of memory" in str(err).lower()


def _release() -> None:
    from accelerate.utils.memory import clear_device_cache

    clear_device_cache(garbage_collection=True)


def probe_batch_size(try_batch: Callable[[int], Any], start: int) -> int:
    """The largest of start, start/2, ... for which `try_batch` raises no out-of-memory error."""
    batch = start
    while True:
        try:
            try_batch(batch)
            return batch
        except Exception as err:  # only out-of-memory is handled
            if not is_oom(err):
                raise
            _release()
            if batch == 1:
                raise UserError("auto_find_batch_size: even a batch of 1 of the longest rows runs out of memory; "
                                "lower the maximum length, set gradient_checkpointing=true, or use LoRA") from None
            batch = max(1, batch // 2)


def run_with_backoff(fn: Callable[[int], Any], batch_size: int) -> tuple[Any, int]:
    """Call fn(batch_size), halving batch_size on out-of-memory; returns (result, batch size that worked)."""
    while True:
        try:
            return fn(batch_size), batch_size
        except Exception as err:  # only out-of-memory is handled
            if not is_oom(err) or batch_size == 1:
                raise
            _release()
            batch_size = max(1, batch_size // 2)


def longest_rows_step(accelerator: Any, model: Any, task: Any, split: Any, pad_id: int) -> Callable[[int], None]:
    """A probe: forward + backward on the `b` longest training rows, gradients discarded, RNG restored."""
    import torch

    from tuneforge.engine.step import forward_backward

    order = np.argsort(-split.batch_lengths, kind="stable")
    multiple = 8 if accelerator.device.type == "cuda" else None

    def step(batch_size: int) -> None:
        rng = torch.get_rng_state()
        model.to(accelerator.device)
        model.train()
        try:
            micro = [task.collate(split, order[:batch_size], pad_id, multiple)]
            with accelerator.autocast():
                forward_backward(accelerator, model, task, micro)
        finally:
            model.zero_grad(set_to_none=True)
            torch.set_rng_state(rng)

    return step


def estimated_batch_size(fits: Callable[[int], bool], start: int) -> int:
    batch = start
    while batch > 1 and not fits(batch):
        batch //= 2
    return batch


def choose_batch_size(cfg: Any, session: Any, task: Any, model: Any, tokenizer: Any, split: Any, console: Any,
                      probe: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """Return (config with the batch and accumulation found, what to record in run.json)."""
    import dataclasses

    from tuneforge.engine.memory import available_memory, estimate_for_model

    t = cfg.training
    target = t.per_device_train_batch_size * t.gradient_accumulation_steps
    accelerator = session.accelerator
    probe = accelerator.device.type == "cuda" if probe is None else probe
    start = min(t.per_device_train_batch_size, len(split))
    if probe:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        batch = probe_batch_size(longest_rows_step(accelerator, model, task, split, pad_id), start)
        how = "largest batch of the longest rows that ran without running out of memory"
    else:
        available = available_memory(accelerator.device)
        longest = int(split.batch_lengths.max())

        def fits(b: int) -> bool:
            estimate = estimate_for_model(model, cfg.task, b, longest, accelerator.mixed_precision,
                                          t.gradient_checkpointing)
            return available is None or estimate.total <= 0.9 * available

        batch = estimated_batch_size(fits, start)
        how = "largest batch whose memory estimate fits 90% of the available memory"
    accumulation = math.ceil(target / batch)
    console.print(f"auto_find_batch_size: per_device_train_batch_size {batch} ({how}), gradient_accumulation_steps "
                  f"{accumulation}: effective batch {batch * accumulation} (target {target})", highlight=False)
    training = dataclasses.replace(t, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation)
    info = {"per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation,
            "effective_batch_size": batch * accumulation, "target_effective_batch_size": target,
            "method": "out-of-memory probe" if probe else "memory estimate"}
    return dataclasses.replace(cfg, training=training), info
