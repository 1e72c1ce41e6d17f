"""Swap modules that are slow in eager PyTorch for library equivalents that compute the same function.

>>> fuse_activations(model)   # doctest: +SKIP
'activations: 12 tanh-GELUs as one fused kernel each (the same function; GELUTanh)'

GPT-2, GPT-J, CodeGen and the T5 v1.1 / FLAN-T5 family use transformers' `NewGELUActivation`, which writes the
tanh approximation of GELU as eight elementwise operations: eight kernels forward and more backward, each a
full pass over the (batch x length x 4 x width) MLP activations, the largest tensors of a layer (memory-bound
time that eager mode cannot overlap with the matmuls; on CPU, fused was about 4x faster forward + backward,
docs/BENCHMARKS.md).
transformers' `GELUTanh` computes the same formula as one fused kernel (`gelu(approximate="tanh")`), in fp32
internally. Only the module in memory changes: the saved config keeps its activation name, so the saved model
is unchanged.
"""

from __future__ import annotations

from typing import Any


def fuse_activations(model: Any) -> str | None:
    """Replace every NewGELUActivation in `model` with GELUTanh; returns a note, or None when none was found."""
    from transformers import activations

    fused = getattr(activations, "GELUTanh", None) or activations.PytorchGELUTanh
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is activations.NewGELUActivation:
                setattr(module, name, fused())
                swapped += 1
    if not swapped:
        return None
    return f"activations: {swapped} tanh-GELUs as one fused kernel each (the same function; GELUTanh)"
