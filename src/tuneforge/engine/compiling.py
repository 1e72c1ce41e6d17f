"""torch.compile for training (`training.torch_compile`), in place so parameter names and checkpoints stay plain.

>>> loss_fn = compile_for_training(model, task)        # doctest: +SKIP
>>> with eager():                                      # doctest: +SKIP
...     evaluate(...)                                  # evaluation and generation run uncompiled

Two scopes:
- "model": the whole model, and in training forward + loss as one graph, so the cross-entropy fuses with the
  logits instead of materialising fp32 copies of them (batch x length x vocabulary for a causal LM).
- "blocks" (regional compilation): each repeated layer (a ModuleList of one class: GPT-2's `h`, BERT's
  `layer`) is compiled, and the identical layers share one compiled graph, so compiling costs about one layer
  instead of all of them; embeddings, head and loss stay eager.
Evaluation runs eagerly under both: its lengths vary and generation grows them token by token, so a compiled
evaluation would recompile for shapes it sees once.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

SCOPE = "model"  # "model" or "blocks"; docs/BENCHMARKS.md measures both


def compile_for_training(model: Any, task: Any, scope: str | None = None) -> Any:
    """Compile `model` in place; returns the loss function the loop should call (task.loss or its compiled
    form)."""
    scope = scope or SCOPE
    if scope == "blocks":
        blocks = repeated_blocks(model)
        if blocks:
            for block in blocks:
                block.compile()
            return task.loss
    model.compile()
    return torch.compile(task.loss)


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers of every ModuleList whose items all share one class (the transformer's repeated layers)."""
    if isinstance(model, torch.nn.ModuleList) and len(model) > 1 and all(type(m) is type(model[0]) for m in model):
        return list(model)  # the outermost list only: not also the lists inside its layers
    return [block for child in model.children() for block in repeated_blocks(child)]


def eager() -> AbstractContextManager:
    """Run compiled modules uncompiled inside this block (torch >= 2.6; older torch keeps them compiled)."""
    stance = getattr(torch.compiler, "set_stance", None)
    return stance("force_eager") if stance is not None else nullcontext()
