"""Terminal tables for metrics: one column per model or baseline.

>>> from tuneforge.report import print_metrics
>>> print_metrics({"majority": {"accuracy": 0.3, "f1_macro": 0.12}, "model": {"accuracy": 0.9}})  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

ROWS = ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "rouge1", "rouge2", "rougeL",
        "rougeLsum", "gen_len", "loss", "perplexity")


def print_metrics(columns: dict[str, dict[str, Any]], title: str = "metrics", console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    for row in ROWS:
        if any(row in m for m in columns.values()):
            table.add_row(row, *[f"{m[row]:.4f}" if isinstance(m.get(row), (int, float)) else "-"
                                 for m in columns.values()])
    console.print(table)
    for name, m in columns.items():
        if isinstance(m.get("per_class"), dict):
            per = Table(title=f"per class ({name})")
            for col in ("label", "precision", "recall", "f1", "support"):
                per.add_column(col, justify="left" if col == "label" else "right")
            for label, v in m["per_class"].items():
                per.add_row(label, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}",
                            str(v["support"]))
            console.print(per)
