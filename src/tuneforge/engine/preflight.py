"""Decisions taken just before training: memory estimate, automatic batch size, automatic learning rate.

>>> cfg, chosen = preflight(cfg, session, task, model, tokenizer, splits, run_dir, console)   # doctest: +SKIP
>>> chosen["memory_estimate"]["total"], cfg.training.learning_rate                              # doctest: +SKIP

Order: the memory estimate is printed first (nothing is on the device yet), then `auto_find_batch_size`
picks the batch, then `learning_rate: auto` runs the range test at that batch. What was chosen goes into
run.json (and the resolved config); a resumed run passes the choices it recorded (`previous`) and they are
reused instead of searching again. The engine never reads run.json itself.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def preflight(cfg: Any, session: Any, task: Any, model: Any, tokenizer: Any, splits: dict[str, Any],
              run_dir: Path, console: Any, previous: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """(a new config with what was chosen: the one that trains and is written, what to record in run.json);
    `previous`: the choices recorded by an earlier attempt."""
    from tuneforge.engine.memory import available_memory, estimate_for_model, report_memory

    t = cfg.training
    split = splits["train"]
    previous = previous or {}
    chosen: dict[str, Any] = {}
    device = session.accelerator.device
    longest = int(split.batch_lengths.max()) if len(split) else 1

    def estimate() -> Any:  # per process, sharded by the strategy over the processes (engine/memory.py)
        return estimate_for_model(model, cfg.task, cfg.training.per_device_train_batch_size, longest,
                                  session.accelerator.mixed_precision, cfg.training.gradient_checkpointing,
                                  cfg.distributed, session.accelerator.num_processes)

    first = estimate()
    if t.auto_find_batch_size:
        console.print(f"memory estimate at batch {t.per_device_train_batch_size}: {first.render()}", highlight=False)
        if "auto_find_batch_size" in previous:
            found = previous["auto_find_batch_size"]
            cfg = dataclasses.replace(cfg, training=dataclasses.replace(
                cfg.training, per_device_train_batch_size=found["per_device_train_batch_size"],
                gradient_accumulation_steps=found["gradient_accumulation_steps"]))
        else:
            from tuneforge.engine.batch_size import choose_batch_size

            cfg, found = choose_batch_size(cfg, session, task, model, tokenizer, split, console)
        chosen["auto_find_batch_size"] = found
        first = estimate()
    report_memory(first, available_memory(device), session.device_description, console)
    chosen["memory_estimate"] = first.to_dict()
    if t.learning_rate == "auto":
        if "lr_find" in previous:
            found = previous["lr_find"]
            cfg = dataclasses.replace(cfg, training=dataclasses.replace(
                cfg.training, learning_rate=found["suggested_learning_rate"]))
        else:
            from tuneforge.engine.lr_finder import choose_learning_rate

            cfg, found = choose_learning_rate(cfg, session, task, model, tokenizer, split, run_dir, console)
        chosen["lr_find"] = found
    return cfg, chosen
