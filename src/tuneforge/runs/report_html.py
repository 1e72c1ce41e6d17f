"""report.html: one self-contained page per run (every image embedded as a data: URI, no network needed).

>>> from tuneforge.runs.report_html import write_report
>>> write_report(Path("runs/my-run"))            # doctest: +SKIP
PosixPath('runs/my-run/report.html')

Sections: headline metrics with baselines; training/validation loss, learning-rate schedule and validation
metrics over steps (from metrics.jsonl); confusion matrix and per-class F1 (classification); the input-length
histogram with the truncation point (lengths.json); metric per input-length bucket and the worst examples
(error_analysis.json); the learning-rate range test's curve when the run wrote lr_find.csv (`learning_rate:
auto`), with the suggestion recorded in run.json; the data report, the resolved config and the environment.
Plots use matplotlib's headless Agg backend.
The page quotes evaluation text (worst examples), so it is never uploaded by push_to_hub.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path
from typing import Any

from tuneforge.runs.liveness import effective_status
from tuneforge.runs.record import is_run, read_info, read_json, read_log
from tuneforge.runs.report import METRIC_ROWS, metric_columns

MAX_CLASSES_IN_MATRIX = 40


def _figure(width: float = 6.4, height: float = 3.6) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig: Any, alt: str) -> str:
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}"><figcaption>' \
           f"{html.escape(alt)}</figcaption></figure>"


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_losses(records: list[dict[str, Any]]) -> str | None:
    train, val = _series(records, "loss"), _series(records, "eval_loss")
    if not train[0] and not val[0]:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    if train[0]:
        ax.plot(*train, label="training loss", color="#1f77b4")
    if val[0]:
        ax.plot(*val, "o-", label="validation loss", color="#d62728")
    ax.set(xlabel="optimizer step", ylabel="loss", title="Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _img(fig, "Training and validation loss")


def plot_learning_rate(records: list[dict[str, Any]]) -> str | None:
    steps, lrs = _series(records, "learning_rate")
    if not steps:
        return None
    fig = _figure(6.4, 3.0)
    ax = fig.add_subplot()
    ax.plot(steps, lrs, color="#2ca02c")
    ax.set(xlabel="optimizer step", ylabel="learning rate", title="Learning-rate schedule")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    return _img(fig, "Learning-rate schedule")


def plot_eval_metrics(records: list[dict[str, Any]]) -> str | None:
    skip = {"eval_loss", "eval_perplexity", "eval_tokens", "eval_gen_len"}
    keys = list(dict.fromkeys(k for r in records for k, v in r.items()
                              if k.startswith("eval_") and k not in skip and isinstance(v, (int, float))))
    headline = [k for k in keys if k.removeprefix("eval_") in ("accuracy", "f1_macro", "f1_micro", "r2", "rouge1",
                                                               "rouge2", "rougeL")]
    keys = headline or keys
    if not keys:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for key in keys:
        ax.plot(*_series(records, key), "o-", label=key.removeprefix("eval_"))
    ax.set(xlabel="optimizer step", ylabel="value", title="Validation metrics")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _img(fig, "Validation metrics over training")


def plot_confusion(matrix: list[list[int]], labels: list[str]) -> str | None:
    import numpy as np

    if not matrix or len(labels) > MAX_CLASSES_IN_MATRIX:
        return None
    m = np.asarray(matrix)
    size = max(3.6, 0.45 * len(labels) + 2)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    rows = m / np.maximum(m.sum(axis=1, keepdims=True), 1)  # colour = share of the true class
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (counts; colour: row share)")
    if len(labels) <= 15:
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if rows[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _img(fig, "Confusion matrix")


def plot_per_class_f1(per_class: dict[str, dict[str, float]]) -> str | None:
    if not per_class:
        return None
    names = list(per_class)
    fig = _figure(6.4, max(2.5, 0.3 * len(names) + 1.2))
    ax = fig.add_subplot()
    ax.barh(names, [per_class[n]["f1"] for n in names], color="#9467bd")
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="F1", title="F1 per class")
    ax.grid(axis="x", alpha=0.3)
    return _img(fig, "F1 per class")


def plot_lengths(lengths: dict[str, Any] | None) -> str | None:
    train = (lengths or {}).get("train") or {}
    if not train.get("counts"):
        return None
    edges, counts = train["edges"], train["counts"]
    fig = _figure()
    ax = fig.add_subplot()
    ax.stairs(counts, edges, fill=True, color="#8c564b", alpha=0.8)
    limit = train.get("max_length")
    if limit is not None and lengths.get("length_key") != "block_size (packed)":
        ax.axvline(limit, color="#d62728", linestyle="--", label=f"truncation at {limit} tokens")
        ax.legend()
    ax.set(xlabel="tokens per training example (before truncation)", ylabel="examples",
           title=f"Input lengths ({train.get('truncated', 0)} of {train.get('rows', 0)} truncated)")
    return _img(fig, "Input-length histogram with the truncation point")


def read_lr_find(path: Path) -> dict[str, list[float]] | None:
    """lr_find.csv as written by the range test (engine/lr_finder.py): step, learning_rate, loss, smoothed_loss."""
    if not path.exists():
        return None
    out: dict[str, list[float]] = {"lrs": [], "losses": [], "smoothed": []}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                values = [float(row["learning_rate"]), float(row["loss"]), float(row["smoothed_loss"])]
            except (KeyError, TypeError, ValueError):
                continue  # a line cut short
            for key, value in zip(out, values):
                out[key].append(value)
    return out if out["lrs"] else None


def plot_lr_finder(finder: dict[str, list[float]] | None, suggestion: float | None = None) -> str | None:
    if not finder:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(finder["lrs"], finder["losses"], color="0.7", linewidth=1, label="loss")
    ax.plot(finder["lrs"], finder["smoothed"], color="#1f77b4", label="smoothed loss")
    ax.set_xscale("log")
    if suggestion:
        ax.axvline(suggestion, color="#d62728", linestyle="--", label=f"suggested {suggestion:.2g}")
    ax.legend()
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss", title="Learning-rate finder")
    return _img(fig, "Learning-rate finder")


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else html.escape("-" if v is None else str(v))


def _table(header: list[str] | None, rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header) if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}">{f"<thead><tr>{head}</tr></thead>" if head else ""}<tbody>{body}</tbody></table>'


def _metrics_table(metrics: dict[str, Any]) -> str:
    columns = metric_columns(metrics)
    rows = [[m, *[c.get(m) for c in columns.values()]] for m in METRIC_ROWS
            if any(isinstance(c.get(m), (int, float)) for c in columns.values())]
    table = _table(["metric", *columns], rows, "metrics") if rows else "<p>No metrics recorded.</p>"
    notes = metrics.get("diagnosis") or []
    if notes:
        items = "".join(f"<li>{html.escape(n['message'])}; try <code>{html.escape(n['try'])}</code></li>"
                        for n in notes)
        table += f'<div class="diagnosis"><h3>Diagnosis</h3><ul>{items}</ul></div>'
    return table


def _analysis_section(a: dict[str, Any] | None) -> str:
    if not a:
        return ""
    metric = a["metric"]
    out = [f"<h2>Error analysis ({html.escape(a['split'])} split)</h2>",
           f"<h3>{html.escape(metric)} by input length</h3>",
           _table(["input tokens", "rows", metric], [[s["bucket"], s["rows"], s[metric]] for s in a["length_slices"]])]
    if a.get("confused_pairs"):
        out += ["<h3>Most confused label pairs</h3>",
                _table(["true", "predicted", "count"], [[p["true"], p["predicted"], p["count"]]
                                                        for p in a["confused_pairs"]])]
    for key, title in (("most_confident_errors", "Most confidently wrong"), ("lowest_rouge", "Lowest ROUGE-L"),
                       ("highest_loss", "Highest loss"), ("largest_errors", "Largest absolute errors")):
        examples = a.get(key) or []
        if examples:
            cols = list(dict.fromkeys(k for ex in examples for k in ex))
            out += [f"<h3>{title}</h3>", _table(cols, [[ex.get(c) for c in cols] for ex in examples], "examples")]
    return "\n".join(out)


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f4f4f4}table.metrics td:not(:first-child){text-align:right;font-variant-numeric:
tabular-nums}table.examples td{max-width:420px;overflow-wrap:anywhere}.grid{display:flex;flex-wrap:wrap;gap:1em}
.grid figure{flex:1 1 460px;max-width:640px}
figure{margin:0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#666}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}.status{font-weight:bold}"""

# Records, for tests and for anyone checking the file, whether every embedded image decoded.
CHECK_SCRIPT = """window.addEventListener('load',function(){var imgs=document.images,ok=0;
for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0)ok++;}
document.body.setAttribute('data-images',imgs.length);document.body.setAttribute('data-images-loaded',ok);});"""


def render_report(run_dir: Path) -> str:
    import yaml

    info = read_info(run_dir) if is_run(run_dir) else {}
    metrics = read_json(run_dir / "metrics.json") or {}
    records = read_log(run_dir / "metrics.jsonl")
    analysis = read_json(run_dir / "error_analysis.json")
    status = effective_status(run_dir, info) if info else "unknown"
    title = info.get("id") or run_dir.name
    config_text = (run_dir / "run_config.yaml").read_text(encoding="utf-8") \
        if (run_dir / "run_config.yaml").exists() else ""
    config = yaml.safe_load(config_text) if config_text else {}
    shown = metrics.get("test") if isinstance(metrics.get("test"), dict) else metrics.get("eval") or {}
    labels = list(shown.get("per_class") or {})
    plots = [plot_losses(records), plot_learning_rate(records), plot_eval_metrics(records),
             plot_confusion(shown.get("confusion_matrix") or [], labels),
             plot_per_class_f1(shown.get("per_class") or shown.get("per_label")),
             plot_lengths(read_json(run_dir / "lengths.json")),
             plot_lr_finder(read_lr_find(run_dir / "lr_find.csv"),
                            (info.get("lr_find") or {}).get("suggested_learning_rate"))]
    data_report = (run_dir / "data_report.txt").read_text(encoding="utf-8") \
        if (run_dir / "data_report.txt").exists() else "(no data report)"
    env_rows = [[k, info.get(k)] for k in ("device", "mixed_precision", "host", "model_revision", "data_fingerprint",
                                           "max_length") if info.get(k) is not None]
    env_rows += [[k, v] for k, v in (info.get("versions") or {}).items()]
    head = [["task", config.get("task", info.get("task"))], ["base model", info.get("base_model")],
            ["status", status], ["created", info.get("created_at")], ["finished", info.get("finished_at")],
            ["best step", metrics.get("best_step")], ["selected by", metrics.get("metric_for_best_model") or "loss"]]
    if info.get("parent"):
        head.append(["parent", info["parent"].get("id")])
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)} - tuneforge"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", _table(None, head),
             "<h2>Results</h2>", _metrics_table(metrics),
             "<h2>Plots</h2>", '<div class="grid">' + "".join(p for p in plots if p) + "</div>",
             _analysis_section(analysis),
             "<h2>Data report</h2>", f"<pre>{html.escape(data_report)}</pre>",
             "<h2>Config</h2>", f"<pre>{html.escape(config_text)}</pre>",
             "<h2>Environment</h2>", _table(None, env_rows),
             f"<script>{CHECK_SCRIPT}</script></body></html>"]
    return "\n".join(parts)


# the building blocks other HTML reports share (the study report of tune/report.py)
figure, image, table = _figure, _img, _table


def write_report(run_dir: Path) -> Path:
    path = Path(run_dir) / "report.html"
    path.write_text(render_report(Path(run_dir)), encoding="utf-8")
    return path
