"""report.html of a study: optimisation history, parameter importances, parallel coordinates and the trials
table, drawn with matplotlib like a run's report (embedded PNGs; no plotly, no network).

>>> from tuneforge.tune.report import normalised
>>> normalised([1e-5, 1e-4, 1e-3], log=True)
[0.0, 0.5, 1.0]
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from tuneforge.runs.report_html import CHECK_SCRIPT, CSS, figure, image, table


def _finished(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED,
                                                                       TrialState.FAIL)]


def plot_history(study: Any, metric: str) -> str | None:
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    maximize = study.direction == StudyDirection.MAXIMIZE
    fig = figure()
    ax = fig.subplots()
    xs, ys = [t.number for t in complete], [t.value for t in complete]
    best, running = [], None
    for y in ys:
        running = y if running is None else (max(running, y) if maximize else min(running, y))
        best.append(running)
    ax.scatter(xs, ys, label="complete trial", color="#1f77b4")
    pruned = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.PRUNED and t.intermediate_values]
    if pruned:
        ax.scatter([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                   marker="x", color="#999", label="pruned (last evaluation)")
    ax.step(xs, best, where="post", color="#d62728", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.legend()
    return image(fig, "Optimisation history")


def importances(study: Any) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA); empty with too few complete trials or one parameter."""
    import optuna
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2 or len(study.best_trial.params) < 1:
        return {}
    try:
        return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # e.g. every complete trial has the same value
        return {}


def plot_importances(values: dict[str, float]) -> str | None:
    if not values:
        return None
    fig = figure(6.4, 0.6 + 0.4 * len(values))
    ax = fig.subplots()
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names], color="#2ca02c")
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    return image(fig, "Parameter importances")


def normalised(values: list[float], log: bool = False) -> list[float]:
    """Values scaled to [0, 1] (on a log scale when `log`), for one parallel-coordinates axis."""
    xs = [math.log10(v) if log else float(v) for v in values]
    low, high = min(xs), max(xs)
    return [0.5 if high == low else (x - low) / (high - low) for x in xs]


def plot_parallel(study: Any, metric: str) -> str | None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return None
    names = sorted({k for t in complete for k in t.params})
    axes = []
    for name in names:
        dist = next(t.distributions[name] for t in complete if name in t.distributions)
        raw = [t.params.get(name) for t in complete]
        if isinstance(dist, CategoricalDistribution):
            order = [repr(c) for c in dist.choices]
            axes.append(normalised([order.index(repr(v)) if v is not None else 0 for v in raw]))
        else:
            log = isinstance(dist, (FloatDistribution, IntDistribution)) and dist.log
            axes.append(normalised([v if v is not None else dist.low for v in raw], log=log))
    axes.append(normalised([t.value for t in complete]))
    labels = [n.split(".")[-1] for n in names] + [metric]
    fig = figure(max(6.4, 1.6 * len(labels)), 3.6)
    ax = fig.subplots()
    values = [t.value for t in complete]
    low, high = min(values), max(values)
    import matplotlib

    colours = matplotlib.colormaps["viridis"]
    for i in range(len(complete)):
        shade = 0.5 if high == low else (values[i] - low) / (high - low)
        ax.plot(range(len(labels)), [a[i] for a in axes], color=colours(shade), alpha=0.8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks([0, 1], ["low", "high"])
    ax.set_title(f"each line a complete trial, coloured by validation {metric} (yellow: high)", fontsize=9)
    return image(fig, "Parallel coordinates")


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                     for k, v in params.items())


def render_study_report(study: Any, metric: str) -> str:
    trials = _finished(study)
    try:
        best = study.best_trial
    except ValueError:
        best = None
    values = importances(study) if best is not None else {}
    plots = [plot_history(study, metric), plot_importances(values), plot_parallel(study, metric)]
    rows = []
    for t in trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        rows.append([t.number, t.state.name.lower(), t.value, len(t.intermediate_values), _fmt_params(t.params),
                     f"{seconds:.0f} s" if seconds is not None else "-",
                     t.user_attrs.get("error") or t.user_attrs.get("pruned") or "", t.user_attrs.get("run", "")])
    head = [["study", study.study_name], ["objective", f"{study.direction.name.lower()} validation {metric}"],
            ["trials", len(trials)]]
    if best is not None:
        head += [["best trial", best.number], [f"best {metric}", best.value], ["best parameters",
                                                                              _fmt_params(best.params)]]
    title = f"study {study.study_name}"
    return "\n".join([
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)} - tuneforge"
        f"</title><style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>", table(None, head),
        "<h2>Plots</h2>", '<div class="grid">' + "".join(p for p in plots if p) + "</div>",
        "<h2>Trials</h2>", table(["trial", "state", metric, "evaluations", "parameters", "time", "note", "run"],
                                 rows, "metrics"),
        f"<script>{CHECK_SCRIPT}</script></body></html>"])


def write_study_report(study: Any, folder: Path, metric: str) -> Path:
    path = Path(folder) / "report.html"
    path.write_text(render_study_report(study, metric), encoding="utf-8")
    return path
