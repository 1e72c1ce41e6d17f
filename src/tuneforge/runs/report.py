"""Terminal tables: metrics with one column per model or baseline, and the registry's runs list/show/compare.

>>> from tuneforge.runs.report import print_metrics
>>> print_metrics({"majority": {"accuracy": 0.3, "f1_macro": 0.12}, "model": {"accuracy": 0.9}})  # doctest: +SKIP

METRIC_ROWS is the order metrics are shown in everywhere: these tables, report.html and the model card.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tuneforge.runs.record import RUNS_ROOT, find
from tuneforge.runs.registry import headline, summary

METRIC_ROWS = ("f1", "exact_match", "HasAns_f1", "HasAns_exact_match", "NoAns_f1", "NoAns_exact_match",
               "f1_threshold_0", "null_score_diff_threshold", "precision", "recall", "accuracy", "f1_macro",
               "f1_weighted", "precision_macro", "recall_macro", "f1_micro", "f1_micro_untuned", "precision_micro",
               "recall_micro", "f1_samples",
               "subset_accuracy", "rmse", "mse", "mae", "r2", "pearson", "spearman", "rouge1", "rouge2", "rougeL",
               "rougeLsum", "gen_len", "loss", "perplexity")


def _console(console: Any) -> Any:
    from rich.console import Console

    return console or Console(soft_wrap=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def print_metrics(columns: dict[str, dict[str, Any]], title: str = "metrics", console: Any = None,
                  per_class: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    for row in METRIC_ROWS:
        if any(row in m for m in columns.values()):
            table.add_row(row, *[f"{m[row]:.4f}" if isinstance(m.get(row), (int, float)) else "-"
                                 for m in columns.values()])
    console.print(table)
    for name, m in columns.items():
        rows = m.get("per_class") or m.get("per_label")  # per_label: a multi-label classifier's, with thresholds
        if per_class and isinstance(rows, dict):
            thresholds = "per_label" in m and "per_class" not in m
            per = Table(title=f"per {'label' if thresholds else 'class'} ({name})")
            for col in ("label", "precision", "recall", "f1", "support") + (("threshold",) if thresholds else ()):
                per.add_column(col, justify="left" if col == "label" else "right")
            for label, v in rows.items():
                per.add_row(label, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}",
                            str(v["support"]), *([f"{v.get('threshold', 0.5):.2f}"] if thresholds else []))
            console.print(per)


def print_runs(runs: list[dict[str, Any]], console: Any = None) -> None:
    """`tuneforge runs list`: one row per run summary (registry.list_runs)."""
    from rich.table import Table

    console = _console(console)
    table = Table(title=f"{len(runs)} runs")
    for col in ("id", "created", "task", "base model", "status", "metric", "value", "data", "parent", "tags"):
        table.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    for r in runs:
        name, value = headline(r)
        tags = " ".join(f"{k}={v}" for k, v in (r.get("tags") or {}).items())  # a tune trial: its study and number
        table.add_row(r.get("id", "?"), (r.get("created_at") or "")[:16].replace("T", " "), r.get("task", "?"),
                      Path(r.get("base_model") or "?").name or "?", r["status"], name, _fmt(value),
                      (r.get("data_fingerprint") or "")[:8], (r.get("parent") or {}).get("id") or "", tags)
    console.print(table)


def metric_columns(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The columns every results table shows: validation, test, then each baseline (on its split)."""
    columns = {name: metrics[key] for key, name in (("eval", "validation"), ("test", "test"))
               if isinstance(metrics.get(key), dict)}
    baselines = metrics.get("baselines") or {}
    split = baselines.get("split")
    columns |= {f"baseline {k} ({split})" if split else f"baseline {k}": v for k, v in baselines.items()
                if isinstance(v, dict)}
    return columns


def print_result(metrics: dict[str, Any], console: Any = None) -> None:
    """The end of `tuneforge train`: the results table next to the baselines, then the diagnosis notes."""
    from tuneforge.evaluate.diagnosis import render

    console = _console(console)
    columns = metric_columns(metrics)
    if columns:
        print_metrics(columns, title="results", console=console, per_class=False)
    for line in render(metrics.get("diagnosis") or []):
        console.print(f"[bold yellow]note:[/] {line}", highlight=False)


def print_run(ref: str, root: str | os.PathLike = RUNS_ROOT, console: Any = None) -> None:
    """`tuneforge runs show`: record, metrics and config of one run, whatever its status."""
    console = _console(console)
    path = find(ref, root)
    run = summary(path)
    for key in ("id", "path", "status", "task", "base_model", "model_revision", "created_at", "finished_at",
                "data_fingerprint", "device", "mixed_precision", "host", "pid", "parent", "resumed_from", "error"):
        if run.get(key) not in (None, "", []):
            console.print(f"{key:17} {run[key]}", highlight=False)
    columns = metric_columns(run["metrics"])
    if columns:
        print_metrics(columns, title="metrics", console=console)
    config = path / "run_config.yaml"
    if config.exists():
        console.print("\n[bold]config[/]\n" + config.read_text(encoding="utf-8"), highlight=False)


def print_comparison(result: dict[str, Any], console: Any = None) -> None:
    """`tuneforge runs compare`: the result of registry.compare_runs."""
    from rich.table import Table

    console = _console(console)
    ids = result["runs"]
    table = Table(title="config differences")
    table.add_column("key")
    for i in ids:
        table.add_column(i, overflow="fold")
    for key, values in result["config"].items():
        table.add_row(key, *[_fmt(v) for v in values])
    if not result["config"]:
        table.add_row("(identical configs)", *[""] * len(ids))
    console.print(table)
    table = Table(title=f"metrics (delta vs {ids[0]})")
    table.add_column("metric")
    for i in ids:
        table.add_column(i, justify="right", overflow="fold")
    for key, row in result["metrics"].items():
        cells = [_fmt(row["values"][0])] + [
            f"{_fmt(v)} ({d:+.4g})" if d is not None else _fmt(v) for v, d in zip(row["values"][1:], row["deltas"][1:])]
        table.add_row(key, *cells)
    console.print(table)
