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
from tuneforge.errors import ConfigError, DataError

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
                                "must be class names or integer ids; for a numeric target set "
                                "data.problem_type=regression")
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


def imbalance_warning(counts: dict[str, int], ratio: float = 10.0, share: float = 0.05, weighted: str | None = None
                      ) -> str | None:
    """A warning when the largest class outnumbers the smallest by more than `ratio`, or a class holds under
    `share` of the rows: plain cross-entropy then favours the majority (`weighted`: the class_weights rule in
    use, auto or sqrt, else None). (2 of 100 rows, 98 in the other class:)

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
            + (f"class_weights={weighted} weighs the loss against it; accuracy will flatter the model, watch f1_macro"
               if weighted else "accuracy will flatter the model; consider class_weights=auto and watch f1_macro"))


# class_weights rules -> the power of the inverse-frequency ratio they use (auto: the ratio; sqrt: its square root)
WEIGHT_POWERS = {"auto": 1.0, "sqrt": 0.5}


def weight_power(setting: Any) -> float | None:
    """The power of a class_weights rule (auto, sqrt); None for none or a {label: weight} mapping."""
    return WEIGHT_POWERS.get(setting) if isinstance(setting, str) else None


def class_weight_vector(setting: Any, names: list[str], counts: dict[str, int]) -> list[float] | None:
    """Per-class loss weights in label-id order, or None for unweighted. auto: n / (classes x count), the
    'balanced' rule of scikit-learn; sqrt: the square roots of auto's weights (a class 100x rarer weighs 10x, not
    100x: square-root re-balancing, Mahajan et al. 2018, Kang et al. 2020); a mapping gives weights by label name
    (unlisted labels weigh 1).

    >>> class_weight_vector("auto", ["neg", "pos"], {"neg": 30, "pos": 10})
    [0.6666666666666666, 2.0]
    >>> class_weight_vector("sqrt", ["neg", "pos"], {"neg": 90, "pos": 10})
    [0.7453559924999299, 2.23606797749979]
    """
    from tuneforge.errors import ConfigError

    if setting == "none":
        return None
    if (power := weight_power(setting)) is not None:
        total = sum(counts.values())
        return [(total / (len(names) * counts[n])) ** power if counts.get(n) else 1.0 for n in names]
    unknown = [k for k in setting if k not in names]
    if unknown:
        raise ConfigError(f"training.class_weights: unknown label {unknown[0]!r}; labels in the data: "
                          f"{', '.join(names)}")
    return [float(setting.get(n, 1.0)) for n in names]


# ---- problem types (transformers' `problem_type` spellings) ------------------------------------------------------
SINGLE_LABEL, MULTI_LABEL, REGRESSION = "single_label_classification", "multi_label_classification", "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def detect_problem_type(tables: dict[str, Table], column: str, configured: str | None, delimiter: str | None
                        ) -> tuple[str, str | None]:
    """(problem type, the line that says how it was found, or None when configured). Lists in the label column
    (JSON lists; delimited strings with `data.label_delimiter`) are multi-label; anything else single-label.
    Regression is never guessed: numbers that look continuous are still class ids unless it is configured.

    >>> t = Table("t.jsonl", {"label": [["a", "b"], []]}, [1, 2])
    >>> detect_problem_type({"train": t}, "label", None, None)
    ('multi_label_classification', 'labels are lists: multi-label')
    """
    first_list = first_scalar = None
    for table in tables.values():
        for i, value in enumerate(table.columns[column]):
            if _is_list(value):
                first_list = first_list or (table, i)
            elif not is_blank(value):
                first_scalar = first_scalar or (table, i, value)
            if first_list and first_scalar:
                break
    if first_list and first_scalar and not delimiter:
        (t_list, i_list), (t_one, i_one, value) = first_list, first_scalar
        raise DataError(f"column {column!r} mixes label lists and single labels: a list at {t_list.where(i_list)} "
                        f"and {value!r} at {t_one.where(i_one)}; write every row's labels as a list (e.g. "
                        f'["{value}"]) for multi-label, or one label per row')
    if configured is not None:
        if configured != MULTI_LABEL and delimiter:
            raise ConfigError(f"data.label_delimiter: splits labels into lists (multi-label), but data.problem_type "
                              f"is {configured}; remove label_delimiter or set data.problem_type={MULTI_LABEL}")
        if configured != MULTI_LABEL and first_list:
            t_list, i_list = first_list
            raise DataError(f"{t_list.where(i_list)}: column {column!r} holds a list of labels but "
                            f"data.problem_type is {configured}; set data.problem_type={MULTI_LABEL} (or null to "
                            "detect it)")
        return configured, None
    if first_list:
        return MULTI_LABEL, "labels are lists: multi-label"
    if delimiter:
        return MULTI_LABEL, f"labels are lists (split at data.label_delimiter {delimiter!r}): multi-label"
    return SINGLE_LABEL, None


def _label_set(value: Any, delimiter: str | None, table: Table, i: int, column: str) -> list[str]:
    if _is_list(value):
        items = list(value)
    elif isinstance(value, str) and delimiter:
        items = [part for part in value.split(delimiter)]
    elif delimiter and is_blank(value):  # an empty CSV cell: a row with none of the labels
        items = []
    elif value is None or (isinstance(value, float) and value != value):
        raise DataError(f"{table.where(i)}: column {column!r} is empty; multi-label rows need a list of labels "
                        "([] for a row with none of them)")
    else:
        raise DataError(f"{table.where(i)}: column {column!r} holds {value!r}, not a list of labels; write it as a "
                        "list (e.g. " + f'["{value}"]' + ") or set data.label_delimiter for delimited strings")
    out = []
    for item in items:
        if _is_list(item) or isinstance(item, dict) or item is None or isinstance(item, float):
            raise DataError(f"{table.where(i)}: column {column!r} holds {value!r}; each label in the list must be "
                            "a name or an integer id")
        text = str(item).lower() if isinstance(item, bool) else str(item).strip()
        if text:  # "a||b" or a trailing delimiter: no empty label
            out.append(text)
    return sorted(set(out), key=lambda s: (not _INT.match(s), int(s) if _INT.match(s) else 0, s))


def label_sets(table: Table, column: str, delimiter: str | None) -> list[list[str]]:
    """Each row's labels as a sorted list (a JSON list, or a string split at `delimiter`); DataError otherwise."""
    return [_label_set(v, delimiter, table, i, column) for i, v in enumerate(table.columns[column])]


def encode_label_sets(tables: dict[str, Table], column: str, delimiter: str | None
                      ) -> tuple[list[str], dict[str, list[list[str]]]]:
    """Validate a multi-label column: (label names in sorted order, each split's rows as sorted label lists).
    An empty list (or an empty delimited cell) is a row with none of the labels. Errors: a row that is not a
    list, a nested value, a label in validation/test that training never shows, fewer than two labels.

    >>> t = Table("t.csv", {"tags": ["b|a", "", "a"]}, [2, 3, 4])
    >>> encode_label_sets({"train": t}, "tags", "|")
    (['a', 'b'], {'train': [['a', 'b'], [], ['a']]})
    """
    sets = {name: label_sets(table, column, delimiter) for name, table in tables.items()}
    names = sorted({label for row in sets["train"] for label in row},
                   key=lambda s: (not _INT.match(s), int(s) if _INT.match(s) else 0, s))
    if len(names) < 2:
        raise DataError(f"{tables['train'].source}: column {column!r} holds {len(names)} distinct label(s) in "
                        "training; multi-label classification needs at least two (one yes/no label is single-label "
                        "classification)")
    known = set(names)
    for name, rows in sets.items():
        for i, row in enumerate(rows):
            unseen = [label for label in row if label not in known]
            if unseen:
                raise DataError(f"{tables[name].where(i)}: label {unseen[0]!r} in column {column!r} never appears "
                                f"in training (training labels: {', '.join(names[:20])}); fix the label or add "
                                "training examples for it")
    return names, sets


def multi_hot(rows: list[list[str]], names: list[str]) -> Any:
    """(rows, labels) float32 0/1 matrix of label lists."""
    import numpy as np

    index = {n: i for i, n in enumerate(names)}
    out = np.zeros((len(rows), len(names)), dtype=np.float32)
    for r, row in enumerate(rows):
        out[r, [index[label] for label in row]] = 1.0
    return out


def parse_targets(tables: dict[str, Table], column: str) -> dict[str, list[float]]:
    """Regression targets as floats, per split; a value that is not a finite number is a DataError naming the
    row (numeric strings from CSV parse; booleans, lists, NaN and inf do not).

    >>> parse_targets({"train": Table("t.csv", {"y": ["1.5", "-2", 3]}, [2, 3, 4])}, "y")
    {'train': [1.5, -2.0, 3.0]}
    """
    import math

    out: dict[str, list[float]] = {}
    for name, table in tables.items():
        values = []
        for i, raw in enumerate(table.columns[column]):
            value = None
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                value = float(raw)
            elif isinstance(raw, str):
                try:
                    value = float(raw.strip())
                except ValueError:
                    value = None
            if value is None or not math.isfinite(value):
                what = "is empty" if is_blank(raw) else f"holds {raw!r}, not a finite number"
                raise DataError(f"{table.where(i)}: column {column!r} {what}; regression targets must be numbers "
                                "(fix or remove the row)")
            values.append(value)
        out[name] = values
    return out


def target_scale(values: list[float], source: str, column: str) -> tuple[float, float]:
    """(mean, standard deviation) of the training targets; a constant target is a DataError."""
    import statistics

    mean, std = statistics.fmean(values), statistics.pstdev(values)
    if not std > 0:
        raise DataError(f"{source}: column {column!r} holds the same value ({values[0]:g}) in every training row; "
                        "a regression needs targets that vary")
    return mean, std


POS_WEIGHT_CAP = 10.0  # class_weights=auto for multi-label: negatives/positives per label, at most this


def pos_weight_vector(setting: Any, names: list[str], counts: dict[str, int], rows: int) -> list[float] | None:
    """Multi-label loss weights: the BCE `pos_weight` of each label (a positive counts that many negatives), or
    None. auto: negatives / positives of the label in training, capped at POS_WEIGHT_CAP (uncapped, a label in 1
    of 3,000 rows would weigh 2,999 and its few rows would dominate the gradient) and never below 1; sqrt: the
    square root of that ratio, within the same bounds; a mapping gives the weights by label name (unlisted labels
    weigh 1).

    >>> pos_weight_vector("auto", ["a", "b"], {"a": 50, "b": 2}, 100)
    [1.0, 10.0]
    >>> pos_weight_vector("sqrt", ["a", "b"], {"a": 50, "b": 2}, 100)
    [1.0, 7.0]
    """
    from tuneforge.errors import ConfigError

    if setting == "none":
        return None
    if (power := weight_power(setting)) is not None:
        return [min(POS_WEIGHT_CAP, max(1.0, ((rows - counts[n]) / counts[n]) ** power))
                if counts.get(n) else 1.0 for n in names]
    unknown = [k for k in setting if k not in names]
    if unknown:
        raise ConfigError(f"training.class_weights: unknown label {unknown[0]!r}; labels in the data: "
                          f"{', '.join(names)}")
    return [float(setting.get(n, 1.0)) for n in names]


def iterative_split(rows: list[list[str]], percent: float, seed: int) -> tuple[list[int], list[int], list[str]]:
    """(train indices, validation indices, warnings): iterative stratification (Sechidis, Tsoumakas & Vlahavas
    2011) over label lists, so that every label's share is about the same in both parts. Rarest label first, each
    of its rows goes to the part that still wants most of that label; each label with at least 2 rows wants at
    least one validation row and at least one training row (as the single-label split: a rare label is then
    validated at all), a label with 1 row stays in training. Rows without labels fill the parts' sizes.

    >>> train, val, _ = iterative_split([["a"], ["a", "b"], ["b"], ["a"], ["b"], []] * 5, 20, 0)
    >>> len(train), len(val)
    (24, 6)
    """
    import random
    from collections import defaultdict

    rng = random.Random(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        for label in row:
            by_label[label].append(i)
    want = {0: {}, 1: {}}  # part (0 train, 1 validation) -> label -> rows still wanted
    warnings = []
    for label, idx in by_label.items():
        n_val = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(len(idx) * percent / 100)))
        want[0][label], want[1][label] = len(idx) - n_val, n_val
        if len(idx) < 2:
            warnings.append(f"label {label!r} has 1 example; too few to stratify, kept in training only (it will "
                            "not be validated)")
    size = {1: max(1, round(len(rows) * percent / 100))}
    size[0] = len(rows) - size[1]
    part: dict[int, int] = {}
    left = {label: len(idx) for label, idx in by_label.items()}  # rows of the label not yet assigned
    for idx in by_label.values():
        rng.shuffle(idx)
    while left:
        label = min(left, key=lambda k: (left[k], str(k)))
        for i in by_label[label]:
            if i in part:
                continue
            j = max((0, 1), key=lambda p: (want[p][label], size[p], rng.random()))
            part[i] = j
            size[j] -= 1
            for other in rows[i]:
                want[j][other] -= 1
                if other in left:
                    left[other] -= 1
        left = {k: n for k, n in left.items() if n > 0 and k != label}
    rest = [i for i in range(len(rows)) if i not in part]
    rng.shuffle(rest)
    for i in rest:  # rows without labels
        j = 1 if size[1] > 0 else 0
        part[i] = j
        size[j] -= 1
    train = sorted(i for i, p in part.items() if p == 0)
    val = sorted(i for i, p in part.items() if p == 1)
    in_train = {label for i in train for label in rows[i]}
    for label in sorted(set(by_label) - in_train):  # the greedy order left a label in validation only
        move = next(i for i in val if label in rows[i])
        val.remove(move)
        train = sorted(train + [move])
    return train, val, warnings
