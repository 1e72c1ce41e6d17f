"""One training step's forward and backward over an accumulation window, shared by the training loop, the
batch-size probe and the learning-rate range test.

The window's loss is normalised by the items (examples or target tokens) of the *whole* window, so
accumulated gradients equal those of one big batch (engine/loop.py explains why the Accelerator never divides).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def forward_backward(accelerator: Any, model: Any, task: Any, micro_batches: list[dict[str, Any]],
                     loss_fn: Any = None, weights: list[float] | None = None) -> torch.Tensor:
    """Backpropagate one accumulation window; returns the window's mean loss (a device tensor, no sync).
    `loss_fn` (default task.loss) is the compiled forward + loss under torch_compile.

    Under DDP and FSDP2 (a prepared model, several processes) the window's items are summed over the processes
    before the first backward, and each process's loss is scaled by `strategy.loss_scale` (the process count),
    because both *average* gradients: the result equals one process backpropagating the whole global window.
    Then the returned loss is this process's part of the global mean (the loop adds the parts). Gradients are
    synchronised in the last micro-batch's backward only (`accelerator.no_sync`: DDP's no_sync, FSDP2's
    set_requires_gradient_sync); under DeepSpeed `sync_gradients` marks the last one, whose backward also takes
    DeepSpeed's step (engine/deepspeed.py). `weights`: 0.0 for a micro-batch that only keeps a process in step
    (its share of a global batch was empty; engine/loop.py): it counts no items and adds nothing to the
    gradients."""
    from tuneforge.engine.deepspeed import boundary, engine_of, window
    from tuneforge.engine.dropout import cpu_dropout
    from tuneforge.engine.fsdp import averaging
    from tuneforge.engine.memory import checkpointing
    from tuneforge.engine.strategy import loss_scale

    ds = engine_of(model) is not None
    # DeepSpeed's window is its own (accelerate reads it from the DeepSpeed config): the loss is normalised here
    assert ds or accelerator.gradient_accumulation_steps == 1, "the engine normalises accumulation itself"
    # eager on the CPU: the cheaper dropout mask (engine/dropout.py); a compiled forward has its own, and
    # gradient checkpointing recomputes the forward in the backward, outside this mode: with PyTorch's dropout
    eager = loss_fn is None and not checkpointing(accelerator.unwrap_model(model))
    dropout = cpu_dropout(accelerator.device.type if eager else "other")
    loss_fn = loss_fn or task.loss
    weights = weights or [1.0] * len(micro_batches)
    strategy = "deepspeed" if ds else averaging(model, accelerator.num_processes)
    n_items: Any = sum(task.num_items(b) for b, w in zip(micro_batches, weights) if w)
    world = 1.0
    if strategy is not None:
        counted = torch.tensor(float(n_items), dtype=torch.float64, device=accelerator.device)
        n_items = float(accelerator.reduce(counted, "sum"))
        # DeepSpeed divides by its configured window, also in a short last window of fewer micro-batches
        world = loss_scale(strategy, accelerator.num_processes, window(model) if ds else len(micro_batches))
    total = torch.zeros((), device=accelerator.device)
    for j, (batch, weight) in enumerate(zip(micro_batches, weights)):
        last = j == len(micro_batches) - 1
        if ds:  # accelerate steps the DeepSpeed engine in the backward of the window's last micro-batch
            boundary(accelerator, last)
        with nullcontext() if last or strategy is None or ds else accelerator.no_sync(model):
            with dropout:
                loss = loss_fn(model, to_device(batch, accelerator.device))
            loss = (loss if weight else loss * 0.0) / (n_items or 1)  # items or weights
            accelerator.backward(loss * world if world > 1 else loss)
        total += loss.detach()
    return total
