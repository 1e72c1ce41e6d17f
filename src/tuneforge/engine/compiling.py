"""torch.compile for training (`training.torch_compile`), in place so parameter names and checkpoints stay plain.

>>> from tuneforge.tasks import get_spec, task_names
>>> all(resolve_compile("auto", "cuda", t, 5000)[0] == get_spec(t).compile_auto for t in task_names())
True
>>> any(resolve_compile("auto", "cpu", t, 5000)[0] for t in task_names())
False
>>> loss_fn, note = compile_for_training(model, task, one_length=True)   # doctest: +SKIP
>>> with eager():                                      # doctest: +SKIP
...     evaluate(...)                                  # evaluation and generation run uncompiled

Two scopes, chosen by the training data's shapes:
- "model" when every training row has one length (packed causal LM): the whole model, and forward + loss as
  one graph, so the cross-entropy fuses with the logits instead of materialising fp32 copies of them
  (batch x length x vocabulary). GPT-2 124M on an H100: 2.0x the eager tokens/s (31.7% MFU) for ~28 s of
  compiling, where compiling only its layers gave 1.1x.
- "blocks" (regional compilation) when lengths vary: each repeated layer (the outermost ModuleList of one
  class: GPT-2's `h`, BERT's `layer`, T5's encoder and decoder blocks) is compiled and identical layers share
  one graph, so compiling, and recompiling for a new batch length, costs one layer instead of the model;
  embeddings, head and loss stay eager. BERT-base on an H100: 1.7x the eager rows/s for ~11 s, where the
  whole model had not finished compiling for its first two batch lengths after 90 s.
Evaluation runs eagerly under both: its lengths vary and generation grows them token by token, so a compiled
evaluation would recompile for shapes it sees once.

`auto` (the default) compiles GPU (CUDA) runs of at least AUTO_MIN_STEPS optimizer steps of the tasks whose spec
sets `compile_auto` (classification and causal LM: both measured gains repay their compile time after about 600
steps). Not on CPU (no gain measured) and not for the other tasks (seq2seq: not measured). Under auto a compilation
error falls back to eager instead of ending the run.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from tuneforge.tasks import get_spec

SCOPE: str | None = None  # None: by the data's shapes; bench/gpu_check.py forces "model" or "blocks" to compare
AUTO_MIN_STEPS = 1000  # about twice the measured break-even


def resolve_compile(requested: bool | str, device_type: str, task: str, total_steps: int) -> tuple[bool, str | None]:
    """(compile or not, a note saying why when `auto` decided on a GPU)."""
    if requested != "auto":
        return bool(requested), None
    if device_type != "cuda":
        return False, None
    if not get_spec(task).compile_auto:
        return False, f"torch_compile: off (auto: not measured to pay for {task}; torch_compile=true tries it)"
    if total_steps < AUTO_MIN_STEPS:
        return False, (f"torch_compile: off (auto: {total_steps} steps are too few to repay compiling, "
                       f"which pays from ~600 on an H100; the threshold is {AUTO_MIN_STEPS})")
    return True, (f"torch_compile: on (auto: a GPU run of {total_steps} steps; compiling takes ~10-30 s; "
                  "evaluation stays uncompiled)")


def compile_for_training(model: Any, task: Any, one_length: bool, fall_back: bool = False,
                         scope: str | None = None) -> tuple[Any, str]:
    """Compile `model` in place (the whole model when every training row has `one_length`, else its repeated
    layers); returns the loss function the loop should call and a note saying what was compiled. `fall_back`
    (torch_compile=auto): a model the compiler cannot handle runs eagerly instead of failing."""
    if fall_back:  # imported here: importing dynamo costs ~1.6 s, paid only by runs that compile
        from torch._dynamo import config as dynamo_config

        dynamo_config.suppress_errors = True
    scope = scope or SCOPE or ("model" if one_length else "blocks")
    blocks = repeated_blocks(model) if scope == "blocks" else []
    if blocks:
        for block in blocks:
            block.compile()
        return task.loss, f"compiled: each of the {len(blocks)} repeated layers (batch lengths vary)"
    model.compile()
    return torch.compile(task.loss), "compiled: the whole model with its loss (every batch has one shape)"


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers of every ModuleList whose items all share one class (the transformer's repeated layers)."""
    if isinstance(model, torch.nn.ModuleList) and len(model) > 1 and all(type(m) is type(model[0]) for m in model):
        return list(model)  # the outermost list only: not also the lists inside its layers
    return [block for child in model.children() for block in repeated_blocks(child)]


def eager() -> AbstractContextManager:
    """Run compiled modules uncompiled inside this block (torch >= 2.6; older torch keeps them compiled)."""
    stance = getattr(torch.compiler, "set_stance", None)
    return stance("force_eager") if stance is not None else nullcontext()
