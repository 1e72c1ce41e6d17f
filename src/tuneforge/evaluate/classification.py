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
