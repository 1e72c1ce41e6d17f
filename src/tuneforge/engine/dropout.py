"""Dropout on the CPU with a cheaper random mask: the same function (each element kept with probability 1 - p,
kept elements scaled by 1 / (1 - p)), about 2.5x faster forward + backward.

PyTorch's CPU dropout draws one Bernoulli sample per element (`bernoulli_`, ~6 ns an element on one core) and
multiplies by a mask in the input's dtype; in a MiniLM training step on one core the twenty dropouts (hidden
states and attention probabilities) took a quarter of the step (docs/BENCHMARKS.md). Here the mask comes from 16
random bits an element (`randint` over int64 words, viewed as int16: four elements a draw), compared with
p quantised to 1/65536 (p = 0.1 becomes 0.100006), from the same seeded torch generator, so runs stay
reproducible and a resumed run continues the same stream.

`cpu_dropout()` is a TorchFunctionMode around the forward pass: it catches `torch.nn.functional.dropout`, which
both `nn.Dropout` modules and transformers' eager attention functions call, so no module is swapped and the
saved model is unchanged. It leaves everything else alone: evaluation (training=False), p = 0, in-place dropout,
tensors not on the CPU. The training step (engine/step.py) does not enter it for a compiled forward (inductor
draws its own masks) or under gradient checkpointing, whose backward recomputes the forward outside the mode and
would draw PyTorch's masks there: other masks than the forward's, other gradients.

>>> import torch
>>> with cpu_dropout("cpu"):
...     y = torch.nn.functional.dropout(torch.ones(100_000), 0.25, training=True)
>>> round(float((y == 0).float().mean()), 2), float(y.max())
(0.25, 1.3333333730697632)
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch.overrides import TorchFunctionMode


def drop_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """The kept elements' multiplier (0 or 1 / (1 - p)) in x's dtype and shape."""
    n = x.numel()
    words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    keep = words.view(torch.int16)[:n] >= round(p * 65536) - 32768  # int16 is uniform over [-32768, 32767]
    return keep.view(torch.uint8).to(x.dtype).mul_(1.0 / (1.0 - p)).view(x.shape)  # uint8 -> dtype: the fast cast


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return _MaskedScale.apply(x, drop_mask(x, p))


class _CpuDropout(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.nn.functional.dropout:
            bound = dict(zip(("input", "p", "training", "inplace"), args)) | kwargs
            x, p = bound["input"], bound.get("p", 0.5)
            if (bound.get("training", True) and not bound.get("inplace", False) and 0.0 < p < 1.0
                    and type(x) is torch.Tensor and x.device.type == "cpu" and x.is_floating_point()):
                return fast_dropout(x, p)
        return func(*args, **kwargs)


def cpu_dropout(device_type: str) -> Any:
    """A context in which dropout on the CPU uses the cheaper mask; does nothing on other devices."""
    return _CpuDropout() if device_type == "cpu" else nullcontext()
