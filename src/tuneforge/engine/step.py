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
                     loss_fn: Any = None) -> torch.Tensor:
    """Backpropagate one accumulation window; returns the window's mean loss (a device tensor, no sync).
    `loss_fn` (default task.loss) is the compiled forward + loss under torch_compile."""
    assert accelerator.gradient_accumulation_steps == 1, "the engine normalises accumulation itself"
    loss_fn = loss_fn or task.loss
    n_items = sum(task.num_items(b) for b in micro_batches)
    total = torch.zeros((), device=accelerator.device)
    for j, batch in enumerate(micro_batches):
        last = j == len(micro_batches) - 1
        with nullcontext() if last or accelerator.num_processes == 1 else accelerator.no_sync(model):
            loss = loss_fn(model, to_device(batch, accelerator.device)) / (n_items or 1)  # items or weights
            accelerator.backward(loss)
        total += loss.detach()
    return total
