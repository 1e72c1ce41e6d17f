"""Learning-rate range test (Smith 2017): ramp the rate exponentially per step, watch the smoothed loss.

    tuneforge lr-find run.yaml --output lr_find/        # lr_find.csv, lr_find.png, the suggestion (runs/lr_find.py)
    tuneforge train run.yaml learning_rate=auto          # the same test first, then training at its suggestion

>>> from tuneforge.engine.lr_finder import suggest, range_schedule
>>> [f"{lr:.0e}" for lr in range_schedule(1e-6, 1e-2, 5)]
['1e-06', '1e-05', '1e-04', '1e-03', '1e-02']
>>> suggest([1e-4, 1e-3, 1e-2, 1e-1], [2.0, 1.5, 0.9, 3.0])
0.001

The test trains the model exactly as a run would (same task loss, collation, batching, accumulation window,
gradient clipping, AdamW, precision, freezing/LoRA): each step sets the rate of step i to
`min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))`, then records the window's loss and an exponential
moving average of it (beta 0.98, bias-corrected). It stops when that smoothed loss exceeds 4x its minimum
or turns non-finite (divergence). Afterwards the model's initial weights and the random-number state are
restored, so the run that follows starts exactly where it would have.

**Suggestion rule**: a tenth of the learning rate at which the smoothed loss was lowest (the "min/10"
rule of Smith and fastai): the loss minimum sits just below the point of divergence, one decade lower is
safely inside the region where the loss still falls fast. Range tests are unreliable on some pretrained
models (flat curves, early noise), so `learning_rate: auto` is opt-in and the plot is always written.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.errors import UserError

RULE = "a tenth of the learning rate at the smoothed-loss minimum"
BETA = 0.98
DIVERGE_FACTOR = 4.0


def range_schedule(min_lr: float, max_lr: float, num_steps: int) -> list[float]:
    return [min_lr * (max_lr / min_lr) ** (i / (num_steps - 1)) for i in range(num_steps)]


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """Bias-corrected exponential moving average."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> float:
    """The suggestion rule (see the module docstring)."""
    finite = [(s, lr) for s, lr in zip(smoothed, lrs) if math.isfinite(s)]
    return min(finite)[1] / 10


@dataclass
class LRFindResult:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    diverged_at: float | None = None  # the rate at which the test stopped for divergence
    suggestion: float = 0.0
    rule: str = RULE
    files: dict[str, str] = field(default_factory=dict)

    @property
    def min_loss_lr(self) -> float:
        return self.lrs[int(np.nanargmin(np.asarray(self.smoothed, dtype=float)))]

    @property
    def loss_fell(self) -> bool:
        """Whether the smoothed loss fell clearly (by 5%) below its start: otherwise the suggestion means little."""
        return min(self.smoothed) < 0.95 * self.smoothed[0]

    def summary(self) -> dict[str, Any]:
        return {"suggested_learning_rate": self.suggestion, "rule": self.rule, "min_loss_lr": self.min_loss_lr,
                "diverged_at": self.diverged_at, "steps": len(self.lrs), **self.files}

    def write(self, folder: Path) -> None:
        """lr_find.csv (step, learning_rate, loss, smoothed_loss) and lr_find.png (log-scale plot)."""
        folder.mkdir(parents=True, exist_ok=True)
        csv_path, png_path = folder / "lr_find.csv", folder / "lr_find.png"
        with open(csv_path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", "learning_rate", "loss", "smoothed_loss"])
            for i, row in enumerate(zip(self.lrs, self.losses, self.smoothed)):
                writer.writerow([i, *(f"{v:.6g}" for v in row)])
        import matplotlib

        matplotlib.use("Agg")  # no display: write files only
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(self.lrs, self.losses, color="0.75", linewidth=1, label="loss")
        ax.plot(self.lrs, self.smoothed, color="C0", linewidth=2, label="smoothed loss")
        ax.axvline(self.suggestion, color="C3", linestyle="--", label=f"suggestion {self.suggestion:.2g}")
        if self.diverged_at:
            ax.axvline(self.diverged_at, color="0.4", linestyle=":", label=f"diverged at {self.diverged_at:.2g}")
        finite = [s for s in self.smoothed if math.isfinite(s)]
        if finite:  # keep the diverging tail from squashing the curve
            ax.set_ylim(min(finite) * 0.95 if min(finite) > 0 else min(finite) - 0.1,
                        min(max(finite), DIVERGE_FACTOR * max(min(finite), 1e-9), finite[0] * 1.5) * 1.05)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        ax.set_title(f"LR range test: suggestion {self.suggestion:.2g} ({RULE})", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(png_path, dpi=100)
        plt.close(fig)
        self.files = {"csv": str(csv_path), "png": str(png_path)}


def _windows(split: Any, t: Any, epoch: int) -> list[list[np.ndarray]]:
    from tuneforge.data.batching import batch_order

    batches = batch_order(split.batch_lengths, t.per_device_train_batch_size, t.seed + 1000, epoch,
                          t.train_sampling_strategy)
    G = t.gradient_accumulation_steps
    return [batches[i:i + G] for i in range(0, len(batches), G)]


def lr_range_test(task: Any, model: Any, tokenizer: Any, split: Any, accelerator: Any, t: Any,
                  console: Any = None) -> LRFindResult:
    """Run the range test on `split` with the training settings `t`; the model's weights are restored."""
    import torch

    from tuneforge.engine.optim import build_optimizer
    from tuneforge.engine.step import forward_backward

    device = accelerator.device
    model.to(device)
    initial = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    scaler = accelerator.scaler
    scaler_state = scaler.state_dict() if scaler is not None else None
    optimizer = build_optimizer(model, t, t.lr_find_min_lr, device.type)
    trainable = [p for p in model.parameters() if p.requires_grad]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    multiple = 8 if device.type == "cuda" else None
    result = LRFindResult()
    epoch, windows = 0, _windows(split, t, 0)
    was_training = model.training
    model.train()
    try:
        for step, lr in enumerate(range_schedule(t.lr_find_min_lr, t.lr_find_max_lr, t.lr_find_num_steps)):
            if not windows:
                epoch += 1
                windows = _windows(split, t, epoch)
            micro = [task.collate(split, idx, pad_id, multiple) for idx in windows.pop(0)]
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)  # layer-wise decay's factors kept
            with accelerator.autocast():
                loss = float(forward_backward(accelerator, model, task, micro))
            if scaler is not None:
                scaler.unscale_(optimizer)
            if t.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, t.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            result.lrs.append(lr)
            result.losses.append(loss)
            result.smoothed = smooth(result.losses)
            now = result.smoothed[-1]
            best = min(s for s in result.smoothed if math.isfinite(s)) if any(
                math.isfinite(s) for s in result.smoothed) else math.inf
            if not math.isfinite(now) or (step >= 3 and now > DIVERGE_FACTOR * best):
                result.diverged_at = lr
                break
    finally:
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        model.load_state_dict({k: v for k, v in initial.items()})
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        if scaler is not None:
            scaler.load_state_dict(scaler_state)
        model.train(was_training)
    if not any(math.isfinite(s) for s in result.smoothed):
        raise UserError("lr-find: the loss was not finite from the first step; check the data and "
                        "mixed_precision (fp16 overflows on some models)")
    result.suggestion = suggest(result.lrs, result.smoothed)
    return result


def describe(result: LRFindResult) -> str:
    stop = f"diverged at {result.diverged_at:.3g}" if result.diverged_at else "no divergence up to lr_find_max_lr"
    return (f"LR range test: {len(result.lrs)} steps, smoothed loss lowest at {result.min_loss_lr:.3g}, {stop}; "
            f"suggested learning_rate {result.suggestion:.3g} ({RULE})")


def choose_learning_rate(cfg: Any, session: Any, task: Any, model: Any, tokenizer: Any, split: Any,
                         run_dir: Path, console: Any) -> tuple[Any, dict[str, Any]]:
    """`learning_rate: auto`: run the range test, write its files into the run folder, return the new config."""
    import dataclasses

    result = lr_range_test(task, model, tokenizer, split, session.accelerator, cfg.training, console)
    result.write(run_dir)
    console.print(describe(result) + f"; curve in {result.files['png']}", highlight=False)
    if not result.loss_fell:
        raise UserError(f"training.learning_rate=auto: the loss did not fall during the range test (see "
                        f"{result.files['png']}), so there is no reliable suggestion; set learning_rate explicitly "
                        "or widen lr_find_min_lr/lr_find_max_lr/lr_find_num_steps")
    training = dataclasses.replace(cfg.training, learning_rate=result.suggestion)
    return dataclasses.replace(cfg, training=training), result.summary()

