"""What to tell the user when a fine-tune is weak: pure rules over a finished run's metrics and log.

>>> from tuneforge.evaluate.diagnosis import diagnose
>>> log = [{"step": s, "loss": 2.0 - s / 100} for s in range(10, 101, 10)]
>>> [n["kind"] for n in diagnose({"test": {"accuracy": 0.5}}, log, lambda name: True)]
['undertrained']

Each rule returns at most one note: {"kind", "message", "try"} where `try` is the config change to try.
- **below_baseline**: a held-out metric is worse than a baseline's: each of f1_macro, f1 (entity-level, token
  classification), accuracy, rougeL and perplexity that both report (loss only when neither reports another),
  by more than 0.005 (absolute for scores, relative for perplexity and loss) so that a tie is not flagged.
  Its change to try is the first of the notes below that fired (a run that lost because it overfit is not told
  to train longer); with none of them, `learning_rate=auto` or a larger model.
- **classes_never_predicted**: classes present in the evaluated split that the model never predicted
  (from the confusion matrix's columns; multi-label: labels with support whose predicted count is 0). Each of
  f1_micro (multi-label) and rmse (regression; relative margin, lower is better) is compared like the others.
- **undertrained**: the training loss was still falling at the end. Window: the last quarter of the logged
  training-loss points (at least 4 points; fewer points, no verdict). A least-squares line is fitted to loss
  against step over the window; the note fires when, across the window, that line falls by at least 15% of the
  whole run's fall (first logged loss to the line's end: a straight-line decline puts 25% in the last quarter,
  a converged curve almost none) and by at least 5% of the window's mean loss (a loss near zero that still
  halves is not a problem), and the last validation evaluation was the best one (when there is any).
  A linear schedule's last quarter runs at a small learning rate and flattens the training loss even when the
  model has far to go, so the note also fires when the validation loss was still falling at the last
  evaluation (the last being the best) by at least 10% from the one before, or by at least 2% while the
  training loss has not yet fallen to half its first logged value.
- **overfit**: the validation loss rose by at least 5% (relative) from its lowest value to the last
  evaluation, while the training loss over the same steps fell. The best checkpoint is what was kept. When the
  log has epochs, the change names `num_train_epochs` one past the epoch of the lowest validation loss (if that
  is fewer than the run had).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

# each both sides report (loss last); multi-label runs report f1_micro and f1_macro, regression rmse
COMPARED = ("f1_macro", "f1_micro", "f1", "accuracy", "rougeL", "rmse", "perplexity", "loss")
SCORES = ("f1_macro", "f1_micro", "f1", "accuracy", "rougeL")  # absolute margin; the others a relative one
MARGIN = 0.005
WINDOW_FRACTION = 0.25
MIN_WINDOW = 4
SHARE_OF_FALL = 0.15
FALLING = 0.05
VALIDATION_FALLING = 0.02
VALIDATION_FALLING_FAST = 0.10
HALF = 0.5
ROSE = 0.05
# below a baseline with no sign of under- or overtraining: more epochs would not help (docs/QUALITY.md:
# 10 epochs lost on the 500-row set), so the changes left are the rate and the model
CONVERGED_BUT_BELOW = "learning_rate=auto, or a larger model_name_or_path"
CAUSE_NAMES = {"classes_never_predicted": "classes-never-predicted", "undertrained": "undertrained",
               "overfit": "overfitting"}


def _held_out(metrics: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    for split in ("test", "eval"):
        if isinstance(metrics.get(split), dict):
            return ("test" if split == "test" else "validation"), metrics[split]
    return "validation", {}


def below_baseline(metrics: dict[str, Any], greater_is_better: Callable[[str], bool]) -> dict[str, Any] | None:
    split, model = _held_out(metrics)
    for name, baseline in (metrics.get("baselines") or {}).items():
        if not isinstance(baseline, dict):
            continue
        shared = [k for k in COMPARED if isinstance(model.get(k), (int, float))
                  and isinstance(baseline.get(k), (int, float))]
        if "loss" in shared and len(shared) > 1:
            shared.remove("loss")  # a score or perplexity says more than a loss (a weighted loss differs, too)
        worse = []
        for key in shared:
            ours, theirs = float(model[key]), float(baseline[key])
            sign = 1 if greater_is_better(key) else -1
            if sign * (theirs - ours) > (MARGIN if key in SCORES else MARGIN * abs(theirs)):
                worse.append(f"{key} {ours:.4g} (baseline {theirs:.4g})")
        if worse:
            return {"kind": "below_baseline",
                    "message": f"the {split} {' and '.join(worse)} {'is' if len(worse) == 1 else 'are'} worse "
                               f"than the {name} baseline",
                    "try": CONVERGED_BUT_BELOW}
    return None


def classes_never_predicted(metrics: dict[str, Any], class_weights: Any = None) -> dict[str, Any] | None:
    split, model = _held_out(metrics)
    matrix, labels = model.get("confusion_matrix"), list(model.get("per_class") or {})
    per_label = model.get("per_label")  # multi-label: support and predicted count of each label
    if isinstance(per_label, dict):
        present = [k for k, v in per_label.items() if v.get("support", 0) > 0]
        never = [k for k in present if per_label[k].get("predicted", 1) == 0]
    elif not matrix or len(labels) != len(matrix):
        return None
    else:
        rows = [i for i, row in enumerate(matrix) if sum(row) > 0]
        present = [labels[i] for i in rows]
        never = [labels[i] for i in rows if sum(row[i] for row in matrix) == 0]
    if not never:
        return None
    shown = ", ".join(never[:6]) + (f" and {len(never) - 6} more" if len(never) > 6 else "")
    return {"kind": "classes_never_predicted",
            "message": f"{len(never)} of the {len(present)} classes in the {split} data were never predicted "
                       f"({shown})",
            "try": "class_weights=auto" if class_weights in (None, "none") else
                   "num_train_epochs=10 (with early_stopping_patience=3), or more rows of the rare classes"}


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def _train_losses(log: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    return [(float(r["step"]), float(r["loss"])) for r in log
            if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"]) and "step" in r]


def _eval_losses(log: Sequence[dict[str, Any]], key: str = "eval_loss") -> list[tuple[float, float]]:
    return [(float(r["step"]), float(r[key])) for r in log
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) and "step" in r]


def undertrained(log: Sequence[dict[str, Any]], best_step: int | None = None) -> dict[str, Any] | None:
    points = _train_losses(log)
    n = max(MIN_WINDOW, math.ceil(len(points) * WINDOW_FRACTION))
    if len(points) < MIN_WINDOW or n > len(points):
        return None
    window = points[-n:]
    xs, ys = [p[0] for p in window], [p[1] for p in window]
    mean, slope = sum(ys) / len(ys), _slope(xs, ys)
    drop = -slope * (xs[-1] - xs[0])
    end = mean + slope * (xs[-1] - sum(xs) / len(xs))  # the fitted line at the last logged step
    fall = points[0][1] - end
    evals = _eval_losses(log)
    if evals and best_step is not None and best_step < evals[-1][0]:
        return None  # validation had already peaked: more steps would not help
    if mean > 0 and fall > 0 and drop >= SHARE_OF_FALL * fall and drop >= FALLING * mean:
        why = f"the training loss was still falling at the end ({drop / mean:.0%} over the last {len(window)} " \
              "logged steps)"
    elif (len(evals) >= 2 and evals[-1][1] == min(e[1] for e in evals) and (
            evals[-1][1] <= evals[-2][1] * (1 - VALIDATION_FALLING_FAST)
            or (evals[-1][1] <= evals[-2][1] * (1 - VALIDATION_FALLING) and ys[-1] > HALF * points[0][1]))):
        why = f"the validation loss was still falling at the end ({evals[-2][1]:.4g} -> {evals[-1][1]:.4g})"
        if ys[-1] > HALF * points[0][1]:
            why += f" and the training loss is still {ys[-1] / points[0][1]:.0%} of its start"
    else:
        return None
    return {"kind": "undertrained", "message": why,
            "try": "num_train_epochs=10 (with early_stopping_patience=3), or learning_rate=auto"}


def overfit(log: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    evals = _eval_losses(log)
    if len(evals) < 2:
        return None
    low_step, low = min(evals, key=lambda p: p[1])
    last_step, last = evals[-1]
    if last_step <= low_step or last < low * (1 + ROSE):
        return None
    train = _train_losses(log)
    before = [loss for step, loss in train if step <= low_step][-3:]
    after = [loss for step, loss in train if step > last_step - (last_step - low_step) / 2][-3:]
    if not before or not after or sum(after) / len(after) >= sum(before) / len(before):
        return None
    return {"kind": "overfit",
            "message": f"validation loss rose from {low:.4g} (step {int(low_step)}) to {last:.4g} (step "
                       f"{int(last_step)}) while the training loss fell: overfitting (the best checkpoint was kept)",
            "try": f"{_fewer_epochs(log, low_step)}early_stopping_patience=2, or more data"}


def _epoch_at(log: Sequence[dict[str, Any]], step: float) -> float | None:
    return next((float(r["epoch"]) for r in log if r.get("step") == step
                 and isinstance(r.get("epoch"), (int, float))), None)


def _fewer_epochs(log: Sequence[dict[str, Any]], low_step: float) -> str:
    """`num_train_epochs=N, ` one past the epoch of the lowest validation loss, when the log has epochs and that
    is fewer than the run had, else the generic `fewer num_train_epochs, `: a schedule that short anneals about
    where validation was best."""
    low = _epoch_at(log, low_step)
    total = max((float(r["epoch"]) for r in log if isinstance(r.get("epoch"), (int, float))), default=None)
    if low is None or total is None or math.ceil(low) + 1 >= round(total):
        return "fewer num_train_epochs, "
    return f"num_train_epochs={math.ceil(low) + 1} (validation loss was lowest at epoch {low:g} of {total:g}), "


def diagnose(metrics: dict[str, Any], log: Sequence[dict[str, Any]], greater_is_better: Callable[[str], bool],
             class_weights: Any = None) -> list[dict[str, Any]]:
    """Every note that applies, most important first (`class_weights`: the run's setting, which decides what
    to suggest for classes never predicted)."""
    below = below_baseline(metrics, greater_is_better)
    causes = [classes_never_predicted(metrics, class_weights), undertrained(log, metrics.get("best_step")),
              overfit(log)]
    cause = next((n for n in causes if n is not None), None)
    if below is not None and cause is not None:  # the cause's change, not advice that contradicts it
        below["try"] = f"what the {CAUSE_NAMES[cause['kind']]} note below suggests"
    return [n for n in [below, *causes] if n is not None]


def render(notes: Sequence[dict[str, Any]]) -> list[str]:
    return [f"{n['message']}; try {n['try']}" for n in notes]
