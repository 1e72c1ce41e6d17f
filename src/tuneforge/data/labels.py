"""Classification labels: strings or integers (never both), mapped to ids 0..K-1 in sorted order.

>>> from tuneforge.data.table import Table
>>> from tuneforge.data.labels import encode_labels
>>> names, ids = encode_labels({"train": Table("t.csv", {"label": ["pos", "neg", "pos"]}, [2, 3, 4])}, "label")
>>> names, ids["train"]
(['neg', 'pos'], [1, 0, 1])
"""

from __future__ import annotations

import re
from typing import Any

from tuneforge.data.checks import is_blank
from tuneforge.data.table import Table
from tuneforge.errors import DataError

_INT = re.compile(r"^[+-]?\d+$")


def _kind_and_value(value: Any) -> tuple[str, Any] | None:
    """('int', 3) or ('str', 'pos'); None for a non-integral number (not a class label)."""
    if isinstance(value, bool):
        return "str", str(value).lower()
    if isinstance(value, int):
        return "int", value
    if isinstance(value, float):
        return ("int", int(value)) if value.is_integer() else None
    text = str(value).strip()
    return ("int", int(text)) if _INT.match(text) else ("str", text)


def encode_labels(tables: dict[str, Table], column: str) -> tuple[list[str], dict[str, list[int]]]:
    """Validate the label column of every split and return (label names by id, ids per split).

    Errors: a row with text but no label, a non-integral number, mixed integer/string labels, a label in
    validation/test that training never shows, a single class in training.
    """
    parsed: dict[str, list[Any]] = {}
    first_of_kind: dict[str, tuple[Table, int, Any]] = {}
    for name, table in tables.items():
        values = []
        for i, raw in enumerate(table.columns[column]):
            if is_blank(raw):
                missing = sum(1 for v in table.columns[column] if is_blank(v))
                raise DataError(f"{table.where(i)}: column {column!r} is empty but the row has text "
                                f"({missing} such row(s) in this file); add a label or remove the row")
            kv = _kind_and_value(raw)
            if kv is None:
                raise DataError(f"{table.where(i)}: column {column!r} holds {raw!r}; classification labels "
                                "must be class names or integer ids (regression is not supported)")
            first_of_kind.setdefault(kv[0], (table, i, raw))
            values.append(kv[1])
        parsed[name] = values
    if len(first_of_kind) > 1:
        (t_int, i_int, v_int), (t_str, i_str, v_str) = first_of_kind["int"], first_of_kind["str"]
        raise DataError(f"column {column!r} mixes integer and text labels: {v_int!r} at {t_int.where(i_int)} "
                        f"and {v_str!r} at {t_str.where(i_str)}; use one kind of label throughout")
    train_values = parsed["train"]
    classes = sorted(set(train_values))
    if len(classes) < 2:
        only = classes[0] if classes else None
        raise DataError(f"{tables['train'].source}: column {column!r} has a single class ({only!r}) in "
                        "training; classification needs at least two")
    index = {c: i for i, c in enumerate(classes)}
    for name, values in parsed.items():
        for i, value in enumerate(values):
            if value not in index:
                raise DataError(f"{tables[name].where(i)}: label {value!r} in column {column!r} never appears "
                                f"in training (training labels: {', '.join(map(str, classes[:20]))}); "
                                "fix the label or add training examples for it")
    return [str(c) for c in classes], {name: [index[v] for v in values] for name, values in parsed.items()}


def imbalance_warning(counts: dict[str, int], ratio: float = 10.0, share: float = 0.05, weighted: bool = False
                      ) -> str | None:
    """A warning when the largest class outnumbers the smallest by more than `ratio`, or a class holds under
    `share` of the rows: plain cross-entropy then favours the majority. (2 of 100 rows, 98 in the other class:)

    >>> imbalance_warning({"spam": 2, "ham": 98})[:80]
    "strong class imbalance in training data: 'ham' 98 rows vs 'spam' 2 (49x; 'spam' "
    """
    present = {k: v for k, v in counts.items() if v > 0}
    if len(present) < 2:
        return None
    big, small = max(present, key=present.get), min(present, key=present.get)
    total = sum(present.values())
    rare = [k for k, v in present.items() if v / total < share]
    if present[big] / present[small] <= ratio and not rare:
        return None
    return (f"strong class imbalance in training data: {big!r} {present[big]} rows vs {small!r} {present[small]} "
            f"({present[big] / present[small]:.0f}x; {small!r} is {100 * present[small] / total:.1f}% of rows); "
            + ("class_weights=auto weighs the loss against it; accuracy will flatter the model, watch f1_macro"
               if weighted else "accuracy will flatter the model; consider class_weights=auto and watch f1_macro"))


def class_weight_vector(setting: Any, names: list[str], counts: dict[str, int]) -> list[float] | None:
    """Per-class loss weights in label-id order, or None for unweighted. auto: n / (classes x count), the
    'balanced' rule of scikit-learn; a mapping gives weights by label name (unlisted labels weigh 1).

    >>> class_weight_vector("auto", ["neg", "pos"], {"neg": 30, "pos": 10})
    [0.6666666666666666, 2.0]
    """
    from tuneforge.errors import ConfigError

    if setting == "none":
        return None
    if setting == "auto":
        total = sum(counts.values())
        return [total / (len(names) * counts[n]) if counts.get(n) else 1.0 for n in names]
    unknown = [k for k in setting if k not in names]
    if unknown:
        raise ConfigError(f"training.class_weights: unknown label {unknown[0]!r}; labels in the data: "
                          f"{', '.join(names)}")
    return [float(setting.get(n, 1.0)) for n in names]
