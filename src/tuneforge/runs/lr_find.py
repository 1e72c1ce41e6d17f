"""`tuneforge lr-find`: the learning-rate range test alone, on a run's training data, without a run folder.

    tuneforge lr-find run.yaml --output lr_find/        # lr_find.csv, lr_find.png, the suggestion

The model is prepared exactly as `tuneforge train` prepares it (runs/train.py `prepare_training`); the test
itself and its suggestion rule are the engine's (engine/lr_finder.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.engine.lr_finder import LRFindResult, describe, lr_range_test


def find_lr(config: Any = None, overrides: Any = None, output: str | Path = "lr_find",
            console: Any = None) -> LRFindResult:
    """Run the range test and write lr_find.csv and lr_find.png to `output`; returns the result."""
    from rich.console import Console

    from tuneforge.config import load_config
    from tuneforge.runs.train import prepare_training
    from tuneforge.tasks import get_task

    cfg = load_config(config, overrides)
    task = get_task(cfg.task)
    data = task.prepare_data(cfg)
    console = console or Console(soft_wrap=True)
    p = prepare_training(cfg, task, data, console)
    result = lr_range_test(task, p.model, p.tokenizer, p.splits["train"], p.session.accelerator, p.cfg.training,
                           console)
    result.write(Path(output))
    console.print(describe(result), highlight=False)
    if not result.loss_fell:
        console.print("[yellow]warning:[/] the loss did not fall during the test; the suggestion is not reliable "
                      "(widen the range or raise lr_find_num_steps)")
    console.print(f"wrote {result.files['csv']} and {result.files['png']}", highlight=False)
    return result
