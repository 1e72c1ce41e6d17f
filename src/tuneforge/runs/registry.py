"""The run registry: every run folder under one root (default ./runs), summarised with its effective status,
and side-by-side comparisons.

>>> from tuneforge.runs.registry import list_runs, compare_runs
>>> [r["id"] for r in list_runs("runs", task="classification", status="finished")]   # doctest: +SKIP
['20261126-070000-classification-bert']
>>> compare_runs(["runs/a", "runs/b"])["config"]["training.learning_rate"]            # doctest: +SKIP
[2e-05, 5e-05]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import UserError
from tuneforge.runs.liveness import effective_status
from tuneforge.runs.record import RUNS_ROOT, Run, find, read_info


def summary(path: Path) -> dict[str, Any]:
    """run.json plus path, effective status and metrics; any status."""
    run = Run(path)
    info = read_info(path)
    return {**info, "path": str(path), "recorded_status": info.get("status"),
            "status": effective_status(run.path, info), "metrics": run.metrics}


def list_runs(root: str | os.PathLike = RUNS_ROOT, task: str | None = None, status: str | None = None
              ) -> list[dict[str, Any]]:
    """Every run under `root`, oldest first, optionally only one task and/or (effective) status."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--root: {root} is not a folder of runs; train a model first or pass --root")
    runs = []
    studies = [f.parent for f in root.glob("*/study.json")]  # `tuneforge tune` keeps its trial runs inside
    for file in sorted([*root.glob("*/run.json"), *(f for s in studies for f in s.glob("*/run.json"))]):
        try:
            run = summary(file.parent)
        except (OSError, ValueError):
            continue  # a folder being written; not a run yet
        if (task is None or run.get("task") == task) and (status is None or run["status"] == status):
            runs.append(run)
    return sorted(runs, key=lambda r: r.get("created_at") or "")


def headline(run: dict[str, Any]) -> tuple[str, float | None]:
    """The metric that chose the best model, on test when there is one, else validation."""
    metrics = run.get("metrics") or {}
    name = (metrics.get("metric_for_best_model") or "loss").removeprefix("eval_")
    for split in ("test", "eval"):
        value = (metrics.get(split) or {}).get(name)
        if isinstance(value, (int, float)):
            return f"{split} {name}", float(value)
    return name, None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def compare_runs(refs: list[str], root: str | os.PathLike = RUNS_ROOT) -> dict[str, Any]:
    """Config keys whose values differ, and every scalar eval/test metric with its delta from the first run."""
    if len(refs) < 2:
        raise UserError("runs compare: give at least two runs")
    paths = [find(r, root) for r in refs]
    configs = [_flatten(yaml.safe_load((p / "run_config.yaml").read_text()) or {}) for p in paths]
    runs = [summary(p) for p in paths]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    config = {k: [c.get(k) for c in configs] for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1}
    metrics: dict[str, dict[str, Any]] = {}
    for split in ("eval", "test"):
        names = list(dict.fromkeys(k for r in runs for k, v in (r["metrics"].get(split) or {}).items()
                                   if isinstance(v, (int, float)) and not isinstance(v, bool)))
        for name in names:
            values = [(r["metrics"].get(split) or {}).get(name) for r in runs]
            deltas = [None if v is None or values[0] is None else v - values[0] for v in values]
            metrics[f"{split}.{name}"] = {"values": values, "deltas": deltas}
    return {"runs": [r["id"] for r in runs], "paths": [str(p) for p in paths], "config": config,
            "metrics": metrics, "status": [r["status"] for r in runs]}
