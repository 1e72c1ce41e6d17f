"""Progress and metrics: a rich progress bar on terminals (plain log lines otherwise), metrics.jsonl,
and TensorBoard, Weights & Biases or MLflow through accelerate's trackers (`report_to`).

>>> tracker = Tracker(Path("runs/x"), total_steps=300, report_to="none")   # doctest: +SKIP
>>> tracker.log(10, {"loss": 0.69, "learning_rate": 2e-5})                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


class Tracker:
    def __init__(self, run_dir: Path, total_steps: int, report_to: str, console: Console | None = None,
                 config: dict[str, Any] | None = None, main: bool = True) -> None:
        """`main=False` (the other processes of a distributed run): no file, no tracker, nothing printed."""
        self.console = (console or Console(stderr=False)) if main else Console(quiet=True)
        self.total_steps = total_steps
        self.interactive = sys.stdout.isatty() and main
        self.jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8") if main else None
        self.writer = external_tracker(report_to, run_dir, config) if main else None
        self.progress = None
        self.task_id = None
        self.started = time.perf_counter()
        self.start_step = 0

    def start(self, step: int = 0) -> None:
        self.started, self.start_step = time.perf_counter(), step
        if self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                     console=self.console)
            self.task_id = self.progress.add_task("train", total=self.total_steps, completed=step, info="")
            self.progress.start()

    def eta(self, step: int) -> str:
        done = step - self.start_step
        if done <= 0:
            return "?"
        left = (time.perf_counter() - self.started) / done * (self.total_steps - step)
        return f"{int(left // 60)}:{int(left % 60):02d}"

    def advance(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, completed=step)

    def log(self, step: int, metrics: dict[str, Any], epoch: float | None = None) -> None:
        record = {"step": step, **({"epoch": round(epoch, 4)} if epoch is not None else {}), **metrics}
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
        if self.writer is not None:
            self.writer.log({f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}": value
                             for key, value in metrics.items()
                             if isinstance(value, (int, float)) and math.isfinite(value)}, step=step)
        if "loss" in metrics:
            info = (f"loss {_fmt(metrics['loss'])}  lr {metrics.get('learning_rate', 0):.2e}  "
                    f"{metrics.get('samples_per_second', 0):.1f} samples/s")
            if self.progress is not None:
                self.progress.update(self.task_id, completed=step, info=info)
            else:
                self.console.print(f"step {step}/{self.total_steps}  epoch {epoch:.2f}  {info}  ETA {self.eta(step)}",
                                   highlight=False)

    def print(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def close(self) -> None:
        """Idempotent: the loop closes it before its last message, the session again on errors."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.writer is not None:
            self.writer.finish()
            self.writer = None
        if self.jsonl is not None:
            self.jsonl.close()


def external_tracker(report_to: str, run_dir: Path, config: dict[str, Any] | None = None) -> Any:
    """An accelerate tracker for `report_to` (started, config stored), or None for "none".
    TensorBoard writes to <run>/logs; W&B and MLflow use the run id as run name in a "tuneforge" project."""
    if report_to == "none":
        return None
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    name = run_dir.name
    if report_to == "tensorboard":
        tracker = TensorBoardTracker("", logging_dir=run_dir / "logs")  # run_name "": events directly in logs/
    elif report_to == "wandb":
        tracker = WandBTracker("tuneforge", name=name, dir=str(run_dir))
    elif report_to == "mlflow":
        tracker = MLflowTracker(experiment_name="tuneforge", run_name=name)
    else:  # the config schema allows only the names above
        raise ValueError(f"unknown report_to {report_to!r}")
    tracker.start()
    if config and report_to != "tensorboard":  # TensorBoard's hparams view needs flat scalars; run_config.yaml has it
        tracker.store_init_configuration(config)
    return tracker
