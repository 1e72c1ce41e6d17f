"""Streaming evaluation of a model on a tokenized split, optionally with the error analysis folded in.

>>> metrics = evaluate(model, tokenizer, task, split, data, cfg, device)                     # doctest: +SKIP
>>> metrics, analysis = evaluate_with_analysis(model, tokenizer, task, split, data, "test",   # doctest: +SKIP
...                                            cfg, device)

Per batch the task folds predictions into a small state (loss sum, argmax ids); logits are never
accumulated. The analysis itself (buckets, worst examples, the error_analysis.json document) is pure code in
evaluate/errors.py; this module only runs the model.

With several processes each evaluates every N-th row of the length order and the states are merged
(evaluate/shards.py). A model sharded by FSDP2 gathers its weights from every process in each forward pass, so
there the processes run in lockstep: one with fewer batches (the row count does not divide) runs stand-in passes
on one of its rows until all have run as many as process 0, folded into a scratch state that is dropped, so the
metrics still count every row exactly once. (The alternative, gathering the full model on one process to
evaluate it alone, needs the memory sharding exists to avoid and leaves the others idle.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tuneforge.config.schema import RunConfig
from tuneforge.data.batching import eval_order
from tuneforge.data.prepared import PreparedData, TokenizedSplit
from tuneforge.engine.batch_size import run_with_backoff
from tuneforge.engine.compiling import eager
from tuneforge.engine.step import to_device

CPU_EVAL_BATCH, GPU_EVAL_BATCH = 16, 64  # per_device_eval_batch_size left null (docs/BENCHMARKS.md)


def eval_batch_size(configured: int | None, device_type: str) -> int:
    """The evaluation batch: the configured one, else 16 on the CPU (measured faster than larger batches there,
    in bf16 and fp32) and 64 on an accelerator."""
    return configured or (CPU_EVAL_BATCH if device_type == "cpu" else GPU_EVAL_BATCH)


def resolve_eval_batch(cfg: RunConfig, device_type: str) -> tuple[RunConfig, str | None]:
    """The config with per_device_eval_batch_size filled for this device when left null, and the note saying so."""
    import dataclasses

    if cfg.training.per_device_eval_batch_size is not None:
        return cfg, None
    size = eval_batch_size(None, device_type)
    training = dataclasses.replace(cfg.training, per_device_eval_batch_size=size)
    return dataclasses.replace(cfg, training=training), f"per_device_eval_batch_size {size} (on {device_type})"


@dataclass
class EvalBatch:
    """The evaluation batch size of one run: per_device_eval_batch_size at first; an out-of-memory error halves
    it for that evaluation and every later one. Engine state (the session owns it), never written into the
    config; a run records a halved size in run.json (eval_batch_size)."""

    size: int

    @classmethod
    def of(cls, cfg: RunConfig, device_type: str) -> EvalBatch:
        """The run's evaluation batch at its configured size (null: this device's default)."""
        return cls(eval_batch_size(cfg.training.per_device_eval_batch_size, device_type))


def evaluate(model: Any, tokenizer: Any, task: Any, split: TokenizedSplit, data: PreparedData, cfg: RunConfig,
             device: torch.device, multiple: int | None = None, errors: Any = None,
             batch: EvalBatch | None = None) -> dict[str, Any]:
    """Streaming evaluation: per batch the task folds predictions into a small state, never all logits.
    `errors` (an evaluate.errors.ErrorCollector) also gets per-example records for error analysis; `batch` is
    the run's evaluation batch (a fresh one at per_device_eval_batch_size when not given)."""
    from tuneforge.engine.deepspeed import engine_of, zero3
    from tuneforge.engine.distributed import current
    from tuneforge.engine.fsdp import sharded

    batch = batch if batch is not None else EvalBatch.of(cfg, device.type)
    procs = current()
    # the plain module: DDP's forward would synchronise buffers, a collective that processes evaluating
    # different numbers of batches never all reach (mixed-precision autocast sits on the module itself); a
    # DeepSpeed engine's module (ZeRO-3's gathering hooks sit on its submodules)
    deepspeed = engine_of(model) is not None
    model = getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" or deepspeed \
        else model
    lockstep = procs.distributed and (sharded(model) or zero3(model))
    # ZeRO-3 gathers weights into its parameters during the forward: not inside inference mode, whose tensors
    # the next training step could not use
    with torch.no_grad() if zero3(model) else torch.inference_mode():
        return _evaluate(model, tokenizer, task, split, data, cfg, device, multiple, errors, batch, procs, lockstep)


def _evaluate(model: Any, tokenizer: Any, task: Any, split: TokenizedSplit, data: PreparedData, cfg: RunConfig,
              device: torch.device, multiple: int | None, errors: Any, batch: EvalBatch, procs: Any,
              lockstep: bool) -> dict[str, Any]:
    from tuneforge.evaluate.shards import increments, merge, snapshot

    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def run(batch_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
        state: dict[str, Any] = task.init_eval_state(model, tokenizer, cfg)
        if errors is not None:
            errors.reset()  # a retry after out-of-memory must not count the failed pass's rows twice
            state["errors"] = errors
        base = snapshot(state)
        # with several processes each evaluates its own rows (each row exactly once, no padding rows)
        batches = eval_order(split.batch_lengths, batch_size, procs.rank, procs.world)
        for indices in batches:
            step(state, indices)
        state.pop("rows", None)
        missing = len(eval_order(split.batch_lengths, batch_size, 0, procs.world)) - len(batches) if lockstep else 0
        for _ in range(missing):  # process 0 has the most batches; the others match it, folded nowhere
            step(task.init_eval_state(model, tokenizer, cfg), batches[0] if batches else np.arange(1))
        return state, base

    def step(state: dict[str, Any], indices: Any) -> None:
        state["rows"] = indices
        task.eval_step(model, to_device(task.collate(split, indices, pad_id, multiple), device), state)

    # out of memory here halves the evaluation batch only (and later evaluations with the same `batch` start
    # from it); a compiled model evaluates uncompiled (engine/compiling.py). Not in lockstep: the processes
    # would disagree on the batch count, so a sharded evaluation's out-of-memory error ends the run.
    with eager():
        if lockstep:
            state, base = run(batch.size)
        else:
            (state, base), batch.size = run_with_backoff(run, batch.size)
    model.train(was_training)
    if procs.distributed:  # every process merges every process's part alike, so all compute the same metrics
        state = merge(state, base, procs.gather(increments(state, base)))
    return task.eval_metrics(state, data)


def evaluate_with_analysis(model: Any, tokenizer: Any, task: Any, split: Any, data: Any, split_name: str, cfg: Any,
                           device: Any, batch: EvalBatch | None = None, multiple: int | None = None
                           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """One evaluation pass that also collects the error analysis: (metrics, error_analysis document)."""
    from tuneforge.evaluate.errors import analysis_result, build_collector

    table = data.splits.get(split_name)
    collector = build_collector(task.spec, split, data.report.max_length,
                                lambda row: task.error_row(cfg, split, table, tokenizer, row))
    metrics = evaluate(model, tokenizer, task, split, data, cfg, device, multiple, errors=collector, batch=batch)
    return metrics, analysis_result(task.spec, split_name, collector, metrics, data.label_names)
