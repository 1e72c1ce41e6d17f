"""What a run writes besides the model: error analysis, length histogram, baselines, the HTML report and
the model card (last), then the optional upload to the Hugging Face Hub.

>>> from tuneforge.runs.outputs import finish_run
>>> finish_run(Run(Path("runs/my-run")))     # doctest: +SKIP

`record_evaluation` runs inside training (it needs the data); `finish_run` needs only the run folder, so
`tuneforge report RUN` rebuilds the same files later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.data.prepared import PreparedData, TokenizedSplit
from tuneforge.runs.record import Run, read_log, write_json


def length_histogram(split: TokenizedSplit, max_length: int | None, bins: int = 40) -> dict[str, Any]:
    """Counts of untruncated input lengths (tokens) in `bins` bins, with the truncation point (one length per
    example: a windowed example counts once)."""
    lengths = split.example_lengths()
    if len(lengths) == 0:
        return {"counts": [], "edges": [], "max_length": max_length}
    counts, edges = np.histogram(lengths, bins=min(bins, max(1, int(lengths.max() - lengths.min() + 1))))
    return {"counts": counts.tolist(), "edges": [float(e) for e in edges], "max_length": max_length,
            "rows": len(lengths),
            "truncated": int((lengths > max_length).sum()) if max_length is not None else 0}


def record_evaluation(run_dir: Path, metrics: dict[str, Any], analysis: dict[str, Any] | None,
                      splits: dict[str, TokenizedSplit], data: PreparedData, cfg: Any) -> dict[str, Any]:
    """Write error_analysis.json/.md and lengths.json; add baselines (the task's, and any the engine measured,
    e.g. the base model before fine-tuning) and the diagnosis notes to metrics.json. Returns the metrics."""
    from tuneforge.evaluate.baselines import baselines
    from tuneforge.evaluate.diagnosis import diagnose
    from tuneforge.evaluate.errors import write_analysis
    from tuneforge.tasks import get_spec

    if analysis is not None:
        write_analysis(analysis, run_dir)
        found = {**baselines(cfg.task, data, analysis["split"], cfg), **(metrics.get("baselines") or {})}
        found.pop("split", None)
        if found:
            metrics = {**metrics, "baselines": {"split": analysis["split"], **found}}
    metrics = {**metrics, "diagnosis": diagnose(metrics, read_log(run_dir / "metrics.jsonl"),
                                                get_spec(cfg.task).greater_is_better, cfg.training.class_weights)}
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "lengths.json", {"train": length_histogram(splits["train"], data.report.max_length),
                                           "length_key": data.report.length_key})
    return metrics


def finish_run(run: Run, console: Any = None) -> None:
    """report.html, then README.md (the model card, written last), then push_to_hub when configured."""
    from tuneforge.runs.model_card import write_model_card
    from tuneforge.runs.report_html import write_report

    write_report(run.path)
    write_model_card(run.path)
    if run.config.training.push_to_hub:
        from tuneforge.runs.hub import push_run

        url = push_run(run.path)
        if console is not None:
            console.print(f"pushed to {url}", highlight=False)

