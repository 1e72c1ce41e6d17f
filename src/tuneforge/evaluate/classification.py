"""Classification metrics from label ids: accuracy, macro/weighted precision-recall-F1, per class, confusion.

>>> from tuneforge.evaluate.classification import classification_metrics
>>> m = classification_metrics([0, 1, 1, 1], [0, 1, 1, 0], ["neg", "pos"])
>>> round(m["f1_macro"], 3), m["confusion_matrix"]
(0.733, [[1, 0], [1, 2]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], label_names: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(label_names)))
    out: dict[str, Any] = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=average, zero_division=0)
        out |= {f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)}
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=None, zero_division=0)
    out["per_class"] = {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                               "support": int(support[i])} for i, name in enumerate(label_names)}
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=ids).tolist()
    return out


def majority_baseline(train_labels: Sequence[int], eval_labels: Sequence[int], label_names: list[str]
                      ) -> dict[str, Any]:
    """Metrics of always predicting the most frequent training label: the floor any model must beat."""
    from collections import Counter

    majority = Counter(train_labels).most_common(1)[0][0]
    return classification_metrics(eval_labels, [majority] * len(eval_labels), label_names)


# ---- multi-label -------------------------------------------------------------------------------------------------
DEFAULT_THRESHOLD = 0.5
MIN_POSITIVES_TO_TUNE = 5  # a label with fewer positives in the tuning split keeps DEFAULT_THRESHOLD
THRESHOLD_GRID = tuple(round(0.05 + 0.01 * i, 2) for i in range(91))  # 0.05 .. 0.95


def tune_thresholds(y_true: Any, scores: Any, min_positives: int = MIN_POSITIVES_TO_TUNE) -> list[float]:
    """Per-label decision thresholds that maximise each label's F1 on (y_true, scores): the grid 0.05..0.95 in
    steps of 0.01; among thresholds that tie, 0.5 when it is one of them, else the middle one (the middle of the
    plateau, farthest from the scores on either side). A label with fewer than `min_positives` positive rows
    keeps 0.5: its F1 moves by 20 points or more with a single row, so a threshold chosen on it fits noise (and
    one chosen on no positive row at all would only push the threshold up until nothing fires).

    >>> import numpy as np
    >>> y = np.array([[1, 0]] * 6 + [[0, 1]] * 6)
    >>> s = np.array([[0.3, 0.1]] * 6 + [[0.1, 0.2]] * 6)
    >>> tune_thresholds(y, s)
    [0.21, 0.16]
    """
    import numpy as np

    y = np.asarray(y_true) > 0.5
    s = np.asarray(scores, dtype=np.float64)
    grid = np.asarray(THRESHOLD_GRID)
    out = []
    for k in range(y.shape[1]):
        positives = int(y[:, k].sum())
        if positives < min_positives:
            out.append(DEFAULT_THRESHOLD)
            continue
        fired = s[:, k][None, :] >= grid[:, None]  # (thresholds, rows)
        tp = (fired & y[:, k][None, :]).sum(1)
        f1 = 2 * tp / np.maximum(1, fired.sum(1) + positives)
        best = grid[f1 >= f1.max() - 1e-12]
        out.append(DEFAULT_THRESHOLD if np.isclose(best, DEFAULT_THRESHOLD).any() else float(best[len(best) // 2]))
    return out


def multilabel_metrics(y_true: Any, y_pred: Any, label_names: list[str], thresholds: Sequence[float] | None = None
                       ) -> dict[str, Any]:
    """Multi-label metrics of 0/1 matrices (rows x labels): micro/macro/samples F1 (and micro/macro precision and
    recall), subset accuracy (the whole set right), per-label precision/recall/F1/support/predicted count and
    the label's threshold.

    >>> m = multilabel_metrics([[1, 0], [1, 1]], [[1, 0], [1, 0]], ["a", "b"])
    >>> round(m["f1_micro"], 3), m["subset_accuracy"], m["per_label"]["b"]["recall"]
    (0.8, 0.5, 0.0)
    """
    import numpy as np
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    y, p = np.asarray(y_true) > 0.5, np.asarray(y_pred) > 0.5
    out: dict[str, Any] = {"subset_accuracy": float(accuracy_score(y, p))}
    for average in ("micro", "macro"):
        pr, rc, f, _ = precision_recall_fscore_support(y, p, average=average, zero_division=0)
        out |= {f"precision_{average}": float(pr), f"recall_{average}": float(rc), f"f1_{average}": float(f)}
    # a row with no true and no predicted label is right (F1 1), as in row_f1
    out["f1_samples"] = float(precision_recall_fscore_support(y, p, average="samples", zero_division=1.0)[2])
    pr, rc, f, support = precision_recall_fscore_support(y, p, average=None, zero_division=0)
    predicted = p.sum(0)
    out["per_label"] = {name: {"precision": float(pr[i]), "recall": float(rc[i]), "f1": float(f[i]),
                               "support": int(support[i]), "predicted": int(predicted[i]),
                               **({"threshold": float(thresholds[i])} if thresholds is not None else {})}
                        for i, name in enumerate(label_names)}
    return out


def row_f1(y_true: Any, y_pred: Any) -> Any:
    """Each row's F1 between its true and predicted label sets (1 when both are empty): the per-row value whose
    mean is the samples F1."""
    import numpy as np

    y, p = np.asarray(y_true) > 0.5, np.asarray(y_pred) > 0.5
    tp = (y & p).sum(1)
    total = y.sum(1) + p.sum(1)
    return np.where(total == 0, 1.0, 2 * tp / np.maximum(1, total))


# ---- regression --------------------------------------------------------------------------------------------------
def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, Any]:
    """MSE, RMSE, MAE (lower is better), Pearson and Spearman correlation, R² (scikit-learn, scipy); the
    correlations are 0 when either side is constant (undefined).

    >>> m = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    >>> round(m["rmse"], 4), round(m["r2"], 2), m["spearman"]
    (0.5774, 0.5, 1.0)
    """
    import math

    import numpy as np
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    mse = float(mean_squared_error(y, p))
    constant = len(y) < 2 or float(np.ptp(y)) == 0.0 or float(np.ptp(p)) == 0.0
    return {"mse": mse, "rmse": math.sqrt(mse), "mae": float(mean_absolute_error(y, p)),
            "pearson": 0.0 if constant else float(pearsonr(y, p)[0]),
            "spearman": 0.0 if constant else float(spearmanr(y, p)[0]),
            "r2": float(r2_score(y, p)) if len(y) > 1 else 0.0}


def mean_baseline(train_targets: Sequence[float], eval_targets: Sequence[float]) -> dict[str, Any]:
    """Metrics of always predicting the training mean: the floor a regression model must beat (R² <= 0)."""
    mean = float(sum(train_targets) / len(train_targets))
    return {**regression_metrics(eval_targets, [mean] * len(eval_targets)), "value": mean}
