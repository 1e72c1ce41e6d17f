"""torch.compile for training (`training.torch_compile`), in place so parameter names and checkpoints stay plain.

>>> resolve_compile("auto", "cpu", "classification", 5000)
(False, None)
>>> resolve_compile("auto", "cuda", "causal_lm", 5000)[0]
True
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

`auto` (the default) compiles the whole model on a CUDA GPU for classification and causal-LM runs of at least
AUTO_MIN_STEPS optimizer steps. Measured on one H100 (docs/BENCHMARKS.md): GPT-2 124M 2.0x the eager
tokens/s for ~28 s of compilation, BERT-base 1.7x (compiling its layers) for ~11 s, so compiling repays itself
after about 600 steps. Not on CPU (no gain measured) and not for seq2seq (not measured; its two lengths vary
independently). Under auto a compilation error falls back to eager instead of ending the run.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

SCOPE = "model"  # "model" or "blocks"; docs/BENCHMARKS.md measures both
AUTO_MIN_STEPS = 1000  # about twice the measured break-even
AUTO_TASKS = ("classification", "causal_lm")


def resolve_compile(requested: bool | str, device_type: str, task: str, total_steps: int) -> tuple[bool, str | None]:
    """(compile or not, a note saying why when `auto` decided on a GPU)."""
    if requested != "auto":
        return bool(requested), None
    if device_type != "cuda":
        return False, None
    if task not in AUTO_TASKS:
        return False, f"torch_compile: off (auto: not measured to pay for {task}; torch_compile=true tries it)"
    if total_steps < AUTO_MIN_STEPS:
        return False, (f"torch_compile: off (auto: {total_steps} steps are too few to repay compiling, "
                       f"which pays from ~600 on an H100; the threshold is {AUTO_MIN_STEPS})")
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a model the compiler cannot handle trains eagerly instead
    return True, (f"torch_compile: on (auto: a GPU run of {total_steps} steps; compiling takes ~30 s, "
                  "evaluation stays uncompiled)")


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
