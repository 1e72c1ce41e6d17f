"""The training loop: one for every task, on accelerate primitives.

>>> result = fit(cfg, task, model, tokenizer, splits, data, run_dir, tracker)   # doctest: +SKIP
>>> result.best_metric, result.global_step                                        # doctest: +SKIP

Per optimizer step: collate the accumulation window's micro-batches from token arrays, count the items
(examples or target tokens) of the *whole* window, and backpropagate sum-of-losses / window-items for each
micro-batch, so accumulated gradients equal those of one big batch even when the last window is short or
lengths are uneven. accelerate's own accumulation would divide by gradient_accumulation_steps instead, so
the Accelerator is built with 1 and never divides.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuneforge.config.schema import RunConfig
from tuneforge.data.batching import batch_count, batch_order, layout_for, share, step_micro_batches
from tuneforge.data.prepared import PreparedData, TokenizedSplit
from tuneforge.engine.checkpoint import (
    clean_stale,
    complete_checkpoints,
    load_checkpoint,
    load_weights,
    read_state,
    save_checkpoint,
)
from tuneforge.engine.compiling import compile_for_training, resolve_compile
from tuneforge.engine.deepspeed import configure, remember_order
from tuneforge.engine.deepspeed import describe as describe_deepspeed
from tuneforge.engine.deepspeed import grad_norm as deepspeed_grad_norm
from tuneforge.engine.evaluation import EvalBatch, evaluate, evaluate_with_analysis
from tuneforge.engine.fsdp import describe, mark_sharded_for_generate, plain, sharded, total_grad_norm
from tuneforge.engine.guards import GracefulStop, NonFiniteGuard
from tuneforge.engine.optim import build_optimizer, build_scheduler, decay_note
from tuneforge.engine.step import forward_backward
from tuneforge.engine.tracking import Tracker
from tuneforge.errors import Diverged, Interrupted, UserError


@dataclass
class FitResult:
    global_step: int = 0
    epoch: float = 0.0
    best_metric: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, Any] = field(default_factory=dict)
    last_metrics: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False
    train_seconds: float = 0.0
    best_analysis: dict[str, Any] | None = None  # error analysis of the best evaluation (when collected)
    last_analysis: dict[str, Any] | None = None  # ... and of the last one


class _Batches(torch.utils.data.Dataset):
    """Maps a batch of row indices to a collated batch, so a DataLoader can prefetch in workers."""

    def __init__(self, task: Any, split: TokenizedSplit, pad_id: int, multiple: int | None) -> None:
        self.task, self.split, self.pad_id, self.multiple = task, split, pad_id, multiple

    def __getitem__(self, item: tuple[np.ndarray, float]) -> tuple[dict[str, torch.Tensor], float]:
        indices, weight = item  # weight 0.0: a stand-in row for an empty share (see `fit`)
        return self.task.collate(self.split, indices, self.pad_id, self.multiple), weight

    def __len__(self) -> int:  # pragma: no cover - the sampler drives iteration
        return len(self.split)


def _metric_key(cfg: RunConfig, spec: Any) -> tuple[str, bool]:
    """(metric that selects the best model, whether greater is better): the user's greater_is_better when set,
    else the direction the task declares for that metric (perplexity and loss: lower)."""
    name = (cfg.training.metric_for_best_model or "loss").removeprefix("eval_")
    greater = cfg.training.greater_is_better
    return name, spec.greater_is_better(name) if greater is None else greater


def fit(cfg: RunConfig, task: Any, model: Any, tokenizer: Any, splits: dict[str, TokenizedSplit],
        data: PreparedData, run_dir: Path, tracker: Tracker, accelerator: Any, eval_batch: EvalBatch | None = None,
        analyse: bool = False) -> FitResult:
    """Train `model` as `cfg` says; `eval_batch` (engine/evaluation.py EvalBatch) is the run's evaluation batch,
    shared with the evaluations before and after the loop. `analyse`: every evaluation also collects the error
    analysis (kept for the best and the last), so a run whose held-out split is the validation split needs no
    extra pass over it at the end."""
    t = cfg.training
    device = accelerator.device
    eval_batch = eval_batch if eval_batch is not None else EvalBatch.of(cfg, device.type)
    train = splits["train"]
    val = splits.get("validation") if t.eval_strategy != "no" else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Pad batch lengths to a multiple: tensor cores like multiples of 8; a compiled model needs few distinct
    # shapes; under bf16 on CPU, oneDNN builds AMX kernels per new shape (measured on MiniLM: single steps at
    # unseen lengths took up to 2 s against 0.2 s), so buckets of 16 pay for their padding there (docs/BENCHMARKS.md;
    # in fp32 they did not).
    cpu_bf16 = device.type == "cpu" and accelerator.mixed_precision == "bf16"
    # The batch order is one of optimizer steps (the effective batch: per_device x processes x accumulation
    # rows), each cut into micro-batches of per_device x processes rows and those into one share per process:
    # the data order depends on the effective batch only, never on how many processes or accumulation steps
    # carry it, so a checkpoint resumes on another process count with the same data from the same step.
    rank, world = accelerator.process_index, accelerator.num_processes
    per_device, G = t.per_device_train_batch_size, t.gradient_accumulation_steps
    ckpt_dir = run_dir / "checkpoints"
    path = _resolve_resume(t.resume_from_checkpoint, ckpt_dir, tracker) if t.resume_from_checkpoint else None
    if path is not None:
        per_device, G = _elastic(read_state(path), per_device, G, world, tracker)
    micro_rows = per_device * world
    step_rows = micro_rows * G

    def plan(drop_last: bool) -> tuple[int, int]:  # (steps per epoch, total steps)
        per_epoch = batch_count(len(train), step_rows, drop_last=drop_last)
        return per_epoch, t.max_steps if t.max_steps > 0 else math.ceil(t.num_train_epochs * per_epoch)

    compiled, note = resolve_compile(t.torch_compile, device.type, cfg.task, plan(False)[1])
    if note:
        tracker.print(note)
    multiple = 64 if compiled else 8 if device.type == "cuda" else 16 if cpu_bf16 else None
    # a compiled model drops the ragged last batch of each epoch (it would recompile for its size)
    steps_per_epoch, total_steps = plan(compiled)
    tracker.total_steps = total_steps

    optimizer = build_optimizer(model, t, t.learning_rate, device.type)
    if (note := decay_note(optimizer, t)) is not None:
        tracker.print(note)
    scheduler = build_scheduler(optimizer, t, total_steps)
    deepspeed = accelerator.state.deepspeed_plugin is not None
    if deepspeed:  # DeepSpeed's micro batch and window are the ones trained with (elastic resume included)
        configure(accelerator, per_device, G, world)
        order = remember_order(optimizer)
    # one call: under FSDP2 accelerate shards the model, then points the optimizer at the sharded parameters;
    # under DeepSpeed the model becomes its engine and the optimizer ZeRO's (engine/deepspeed.py)
    model, optimizer = accelerator.prepare(model, optimizer)
    mark_sharded_for_generate(model)
    if deepspeed:
        optimizer.tuneforge_order = order  # the checkpoint's parameter indices
    if (note := describe(model, world) or describe_deepspeed(model, world)) is not None:
        tracker.print(note)
    loss_fn = None  # forward_backward's default: task.loss, eager
    if compiled:  # in place: parameter names, save_pretrained and checkpoints stay unchanged
        loss_fn, note = compile_for_training(accelerator.unwrap_model(model), task,
                                             one_length=len(np.unique(train.batch_lengths)) == 1,
                                             fall_back=t.torch_compile == "auto")
        tracker.print(note)
    scaler = accelerator.scaler
    if rank == 0:
        clean_stale(ckpt_dir)
    metric_name, greater = _metric_key(cfg, task.spec)
    result = FitResult()
    if world > 1:  # dropout masks of their own per process (the model's initialisation was the same everywhere)
        from accelerate.utils import set_seed

        set_seed(t.seed, device_specific=True)
    start_epoch, skip_windows, bad_evals, best_path = 0, 0, 0, None
    if path is not None:
        state = load_checkpoint(path, accelerator.unwrap_model(model), optimizer, scheduler, scaler, rank, world)
        result.global_step, start_epoch, skip_windows = state["global_step"], state["epoch"], state["window"]
        result.best_metric, result.best_step = state["best_metric"], state["best_step"]
        result.best_metrics, bad_evals = state.get("best_metrics", {}), state.get("bad_evals", 0)
        best_path = Path(state["best_path"]) if state.get("best_path") else None
        tracker.print(f"resumed from {path}: step {result.global_step}, epoch {start_epoch}, "
                      f"best {metric_name} {result.best_metric}")

    dataset = _Batches(task, train, pad_id, multiple)

    def loader(batches: list[tuple[np.ndarray, float]]) -> Any:  # the sampler yields whole batches of row indices
        # its own generator: a DataLoader draws a seed from the global RNG, which would shift dropout
        # masks after a resume
        return iter(torch.utils.data.DataLoader(dataset, batch_size=None, sampler=batches,
                                                num_workers=t.dataloader_num_workers,
                                                pin_memory=device.type == "cuda",
                                                generator=torch.Generator().manual_seed(t.seed)))
    processes = f" = {per_device} x {world} processes x {G}" if world > 1 else ""
    tracker.print(f"training: {len(train)} examples, {total_steps} optimizer steps "
                  f"({steps_per_epoch} per epoch), effective batch {step_rows}{processes}")
    tracker.start(result.global_step)
    # fp16's GradScaler already skips inf/NaN steps (and expects a few while it searches for a scale), and so
    # does DeepSpeed's fp16 loss scaler
    fp16_scaled = scaler is not None or (deepspeed and accelerator.mixed_precision == "fp16")
    guard = NonFiniteGuard(t.max_nonfinite_steps) if not fp16_scaled else None
    id_log = _SampleIds(run_dir / "sample_ids.jsonl", result.global_step) \
        if t.record_sample_ids and rank == 0 else None
    last_saved = -1
    started = time.perf_counter()
    log_loss = torch.zeros((), device=device)
    log_steps, log_samples, log_tokens, log_time = 0, 0, 0, time.perf_counter()
    lengths = train.batch_lengths  # what a row costs: source (+ target) tokens
    model.train()

    def save(step: int, epoch: int, window: int) -> None:
        state = {"global_step": step, "epoch": epoch, "window": window, "best_metric": result.best_metric,
                 "best_step": result.best_step, "best_metrics": result.best_metrics, "bad_evals": bad_evals,
                 "best_path": str(ckpt_dir / f"checkpoint-{result.best_step}") if result.best_step else None,
                 "metric_for_best_model": metric_name, "num_processes": world, "effective_batch": step_rows}
        nonlocal last_saved
        if id_log is not None:
            id_log.flush()
        save_checkpoint(ckpt_dir, step, accelerator.unwrap_model(model), optimizer, scheduler, scaler, state,
                        keep={best_path} if best_path else set(), limit=t.save_total_limit,
                        shards=cfg.distributed.sharded_checkpoints)
        last_saved = step

    def run_eval(epoch_float: float) -> bool:
        """Evaluate, track the best; return True when this evaluation improved the best metric."""
        nonlocal bad_evals
        if analyse:
            metrics, result.last_analysis = evaluate_with_analysis(model, tokenizer, task, val, data, "validation",
                                                                   cfg, device, eval_batch, multiple)
        else:
            metrics = evaluate(model, tokenizer, task, val, data, cfg, device, multiple, batch=eval_batch)
        scalars = {f"eval_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        tracker.log(result.global_step, scalars, epoch_float)
        shown = [k for k in ("loss", "accuracy", "perplexity", metric_name) if k in metrics]
        tracker.print(f"eval @ step {result.global_step}: " + "  ".join(
            f"{k} {metrics[k]:.4f}" for k in dict.fromkeys(shown)))
        result.last_metrics = metrics
        value = metrics.get(metric_name)
        if value is None:
            raise UserError(f"training.metric_for_best_model: {metric_name!r} is not computed; "
                            f"available: {', '.join(k[5:] for k in scalars)}")
        improved = not math.isnan(value) and (result.best_metric is None or (
            value > result.best_metric + t.early_stopping_threshold if greater
            else value < result.best_metric - t.early_stopping_threshold))
        if improved:
            result.best_metric, result.best_step, result.best_metrics, bad_evals = value, result.global_step, metrics, 0
            result.best_analysis = result.last_analysis
        else:
            bad_evals += 1
        return improved

    epoch, epoch_float = start_epoch, float(start_epoch)
    with GracefulStop(tracker.print) as stop:
        while result.global_step < total_steps and not result.stopped_early:
            steps = batch_order(lengths, step_rows, t.seed, epoch, t.train_sampling_strategy, drop_last=compiled)
            windows = [step_micro_batches(rows, micro_rows) for rows in steps]
            first = skip_windows if epoch == start_epoch else 0
            it = loader([_share(b, rank, world) for w in windows[first:] for b in w])
            for window_index in range(first, len(windows)):
                micro, weights = zip(*[next(it) for _ in windows[window_index]])
                window_loss = forward_backward(accelerator, model, task, list(micro), loss_fn, list(weights))
                if world > 1:  # one small collective: the global window loss, and a stop any process was asked for
                    flag = torch.tensor(1.0 if stop.requested else 0.0, device=device)
                    window_loss, flag = accelerator.reduce(torch.stack([window_loss, flag]), "sum")
                    if flag > 0 and not stop.requested:
                        stop.requested = "SIGTERM"
                grad_norm = None
                if deepspeed:  # DeepSpeed has clipped and stepped (or skipped a non-finite step) in the backward
                    grad_norm = deepspeed_grad_norm(model)
                elif t.max_grad_norm > 0:
                    # a DTensor under FSDP2 (accelerate clips sharded gradients): its full value for the guard
                    grad_norm = plain(accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm))
                if guard is not None:
                    if grad_norm is None:
                        grad_norm = total_grad_norm(model) if sharded(model) else _total_norm(model)
                    bad = guard.check(window_loss, grad_norm, None if deepspeed else optimizer)
                    window_loss = torch.where(bad.bool(), torch.zeros_like(window_loss), window_loss)
                optimizer.step()  # under DeepSpeed a no-op: the engine stepped in the last backward
                if not (fp16_scaled and accelerator.optimizer_step_was_skipped):  # a guarded skip keeps the schedule
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                result.global_step += 1
                epoch_float = epoch + (window_index + 1) / len(windows)
                log_loss += window_loss
                log_steps += 1
                rows = np.concatenate(windows[window_index])
                if id_log is not None:
                    id_log.write(result.global_step, rows)
                log_samples += len(rows)
                log_tokens += int(lengths[rows].sum())
                tracker.advance(result.global_step)
                if result.global_step % t.logging_steps == 0 or result.global_step == total_steps:
                    elapsed = max(1e-9, time.perf_counter() - log_time)
                    skipped, streak = guard.read() if guard is not None else (0, 0)
                    scalars = {"loss": float(log_loss) / max(1, log_steps - skipped) if skipped < log_steps
                               else math.nan, "learning_rate": scheduler.get_last_lr()[0],
                               "samples_per_second": log_samples / elapsed, "tokens_per_second": log_tokens / elapsed}
                    if skipped:
                        scalars["skipped_steps"] = skipped
                        tracker.print(f"[yellow]warning:[/] skipped {skipped} of the last {log_steps} optimizer steps: "
                                      "non-finite loss or gradient (weights left unchanged)")
                    tracker.log(result.global_step, scalars, epoch_float)
                    if guard is not None and guard.tripped(streak):
                        last = complete_checkpoints(ckpt_dir)
                        raise Diverged(
                            f"training diverged: {streak} optimizer steps in a row up to step {result.global_step} "
                            "had a non-finite loss or gradient (all skipped); last complete checkpoint: "
                            f"{last[-1] if last else 'none'}; lower learning_rate, raise warmup_steps, or "
                            "use bf16 instead of fp16 (training.max_nonfinite_steps sets the limit)")
                    log_loss.zero_()
                    log_steps, log_samples, log_tokens, log_time = 0, 0, 0, time.perf_counter()
                end_of_epoch = window_index == len(windows) - 1
                done = result.global_step >= total_steps
                improved = False
                paused = time.perf_counter()  # evaluation and saving do not count against training throughput
                if val is not None and ((t.eval_strategy == "steps" and result.global_step % t.eval_steps == 0)
                                        or (t.eval_strategy == "epoch" and end_of_epoch) or done):
                    improved = run_eval(epoch_float)
                    if t.early_stopping_patience and bad_evals >= t.early_stopping_patience:
                        result.stopped_early = True
                        tracker.print(f"early stopping: no improvement of {metric_name} for {bad_evals} evaluations")
                wants_save = ((t.save_strategy == "steps" and result.global_step % t.save_steps == 0)
                              or (t.save_strategy == "epoch" and end_of_epoch))
                if wants_save or (improved and t.load_best_model_at_end):
                    if improved:
                        best_path = ckpt_dir / f"checkpoint-{result.global_step}"
                    next_epoch, next_window = (epoch + 1, 0) if end_of_epoch else (epoch, window_index + 1)
                    save(result.global_step, next_epoch, next_window)
                if stop.requested and not done:
                    if last_saved != result.global_step:
                        next_epoch, next_window = (epoch + 1, 0) if end_of_epoch else (epoch, window_index + 1)
                        save(result.global_step, next_epoch, next_window)
                    raise Interrupted(f"{stop.requested}: stopped at step {result.global_step} of {total_steps}; "
                                      f"checkpoint saved in {ckpt_dir / f'checkpoint-{result.global_step}'}; "
                                      f"continue with: tuneforge train {run_dir / 'run_config.yaml'} --resume auto",
                                      stop.requested)
                log_time += time.perf_counter() - paused
                if done or result.stopped_early:
                    break
            epoch += 1
    result.epoch = epoch_float
    result.train_seconds = time.perf_counter() - started
    tracker.close()
    if id_log is not None:
        id_log.close()
    if t.load_best_model_at_end and best_path is not None and result.best_step != result.global_step:
        load_weights(best_path, accelerator.unwrap_model(model))
        tracker.print(f"restored the best model (step {result.best_step}, {metric_name} {result.best_metric:.4f})")
    return result


def _share(batch: np.ndarray, rank: int, world: int) -> tuple[np.ndarray, float]:
    """This process's rows of a global batch, weight 1.0; when the batch has fewer rows than processes and this
    share is empty, the batch's first row at weight 0.0 (DDP needs every process in every backward)."""
    mine = share(batch, rank, world)
    return (mine, 1.0) if len(mine) else (batch[:1], 0.0)


def _total_norm(model: Any) -> torch.Tensor:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else torch.zeros(())


def _elastic(state: dict[str, Any], per_device: int, G: int, world: int, tracker: Tracker) -> tuple[int, int]:
    """(per-device batch, accumulation) for resuming a checkpoint with its effective batch: unchanged when the
    config's layout gives it on `world` processes, else the config's per-device batch is the most a device takes
    (elastic resume: a checkpoint of N processes continues on M)."""
    written = int(state.get("num_processes", 1))
    effective = int(state.get("effective_batch") or per_device * written * G)  # older checkpoints: the config's
    asked = (per_device, G)
    if per_device * world * G != effective:
        try:
            per_device, G = layout_for(effective, world, per_device)
        except ValueError:
            raise UserError(f"training.resume_from_checkpoint: the checkpoint trained with an effective batch of "
                            f"{effective} rows on {written} process(es), which {world} processes cannot share "
                            f"evenly; resume on a process count that divides {effective}, or start a new run "
                            "for another batch") from None
    if written != world or (per_device, G) != asked:
        tracker.print(f"elastic resume: the checkpoint's effective batch of {effective} rows ({written} "
                      f"process(es)) kept as {per_device} x {world} process(es) x {G} accumulation; the data order "
                      "is the same, dropout streams are not")
    return per_device, G


def _resolve_resume(value: str, ckpt_dir: Path, tracker: Tracker) -> Path | None:
    if value == "auto":
        found = complete_checkpoints(ckpt_dir)
        if not found:
            tracker.print(f"resume_from_checkpoint=auto: no complete checkpoint in {ckpt_dir}; starting from the "
                          "beginning")
            return None
        return found[-1]
    path = Path(value)
    if not path.is_dir():
        raise UserError(f"training.resume_from_checkpoint: folder not found: {value!r}")
    return path


class _SampleIds:
    """sample_ids.jsonl: the training row ids of each optimizer step. On resume, lines past the checkpoint's
    step (written before a crash) are dropped, so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, resumed_step: int) -> None:
        import json

        kept = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:  # a line cut short by a crash
                    continue
                if record["step"] <= resumed_step:
                    kept.append(line + "\n")
        path.write_text("".join(kept))
        self.file = open(path, "a", encoding="utf-8")

    def write(self, step: int, rows: np.ndarray) -> None:
        self.file.write(f'{{"step": {step}, "ids": {rows.tolist()}}}\n')

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()
