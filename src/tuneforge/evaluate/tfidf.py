"""TF-IDF + logistic regression: the lexical baseline a fine-tuned classifier has to beat.

>>> from tuneforge.evaluate.tfidf import tfidf_logreg
>>> train = ["the parcel never arrived", "where is my parcel", "refund my money", "I want a refund"] * 5
>>> y = [0, 0, 1, 1] * 5
>>> m = tfidf_logreg(train, y, ["my parcel is late", "a refund please"], [0, 1], ["shipping", "billing"])
>>> m["accuracy"], m["train_rows"]
(1.0, 20)

Word 1-2-grams with sublinear tf (Joachims; Wang & Manning 2012 show such bag-of-n-gram linear models are strong
text-classification baselines); character n-grams within word boundaries (`char_wb`, 2-4) are added when the
text is written without spaces (Chinese, Japanese, Thai: whitespace words would be whole sentences). Text pairs
are joined with a separator token. When the run has a validation split distinct from the evaluated one, C and
class weighting are chosen on it from a small grid; otherwise C=10 with balanced class weights. Training rows
are capped (a deterministic sample) and the grid stops at a time budget, so this stays seconds; the rows,
settings and seconds used are returned with the metrics.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

from tuneforge.evaluate.classification import classification_metrics

MAX_ROWS = 20_000  # training rows used by the baseline (a seeded sample beyond this)
TIME_BUDGET_S = 30.0  # the grid stops trying settings once this is spent (the first setting always runs)
GRID = ((10.0, "balanced"), (10.0, None), (1.0, "balanced"), (1.0, None))  # (C, class_weight), first = fallback
PAIR_SEPARATOR = " ||| "


def join_pairs(texts: Sequence[str], pairs: Sequence[str] | None) -> list[str]:
    if pairs is None:
        return [str(t) for t in texts]
    return [f"{t}{PAIR_SEPARATOR}{p}" for t, p in zip(texts, pairs)]


def unspaced(texts: Sequence[str], sample: int = 500) -> bool:
    """True when the text is mostly written without spaces (fewer than one space per 15 characters)."""
    chars = spaces = 0
    for text in texts[:sample]:
        chars += len(text)
        spaces += text.count(" ")
    return chars > 0 and spaces * 15 < chars


def _vectorizer(texts: Sequence[str], chars: bool) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2 if len(texts) >= 1000 else 1,
                           max_features=200_000)
    if not chars:
        return word
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2,
                           max_features=200_000)
    return FeatureUnion([("word", word), ("char", char)])


def _cap(texts: list[str], labels: list[int], max_rows: int, seed: int) -> tuple[list[str], list[int]]:
    if len(texts) <= max_rows:
        return texts, labels
    keep = sorted(random.Random(seed).sample(range(len(texts)), max_rows))
    return [texts[i] for i in keep], [labels[i] for i in keep]


def tfidf_logreg(train_texts: Sequence[str], train_labels: Sequence[int], eval_texts: Sequence[str],
                 eval_labels: Sequence[int], label_names: list[str], *,
                 valid: tuple[Sequence[str], Sequence[int]] | None = None, max_rows: int = MAX_ROWS,
                 time_budget_s: float = TIME_BUDGET_S, seed: int = 0) -> dict[str, Any]:
    """Fit on the training rows (settings chosen on `valid` when given) and score `eval_*` with the model's
    metrics. Returns those metrics plus train_rows, C, class_weight, features ('word' or 'word+char'), seconds."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    texts, labels = _cap([str(t) for t in train_texts], list(train_labels), max_rows, seed)
    chars = unspaced(texts)
    vectorizer = _vectorizer(texts, chars)
    x_train = vectorizer.fit_transform(texts)

    def fit(c: float, weight: str | None) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return LogisticRegression(C=c, class_weight=weight, max_iter=300).fit(x_train, labels)

    chosen, model = GRID[0], None
    if valid is not None and len(valid[0]) and len(set(labels)) > 1:
        from sklearn.metrics import f1_score

        x_valid, best = vectorizer.transform([str(t) for t in valid[0]]), -1.0
        for c, weight in GRID:
            if model is not None and time.perf_counter() - start > time_budget_s:
                break
            candidate = fit(c, weight)
            score = f1_score(list(valid[1]), candidate.predict(x_valid), average="macro", zero_division=0)
            if score > best:
                best, chosen, model = score, (c, weight), candidate
    if model is None:
        if len(set(labels)) < 2:  # one training class: logistic regression cannot fit; predict it
            predictions = [labels[0]] * len(eval_texts)
        else:
            model = fit(*chosen)
    if model is not None:
        predictions = model.predict(vectorizer.transform([str(t) for t in eval_texts])).tolist()
    metrics = classification_metrics(list(eval_labels), predictions, label_names)
    return {**metrics, "train_rows": len(texts), "C": chosen[0], "class_weight": chosen[1] or "none",
            "features": "word+char" if chars else "word",
            "seconds": round(time.perf_counter() - start, 2)}


def tfidf_ovr_logreg(train_texts: Sequence[str], train_sets: Any, eval_texts: Sequence[str], eval_sets: Any,
                     label_names: list[str], *, tune: tuple[Sequence[str], Any] | None = None,
                     select_c: bool = False, max_rows: int = MAX_ROWS, time_budget_s: float = TIME_BUDGET_S,
                     seed: int = 0) -> dict[str, Any]:
    """Multi-label baseline: TF-IDF + one-vs-rest logistic regression (one binary classifier per label, balanced
    class weights), decided with the fine-tuned model's own rule: per-label thresholds tuned on `tune` (the
    run's validation rows; evaluate/classification.py tune_thresholds), 0.5 without it. With `select_c` (a
    validation split distinct from the evaluated one), C is chosen on `tune` by micro-F1 from (10, 1)."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from tuneforge.evaluate.classification import multilabel_metrics, tune_thresholds

    start = time.perf_counter()
    y = np.asarray(train_sets)
    texts, rows = _cap([str(t) for t in train_texts], list(range(len(y))), max_rows, seed)
    y = y[rows]
    chars = unspaced(texts)
    vectorizer = _vectorizer(texts, chars)
    x_train = vectorizer.fit_transform(texts)
    constant = (y.min(0) == y.max(0))  # a label always (or never) present in training: predict that
    columns = np.flatnonzero(~constant)

    def fit(c: float) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return OneVsRestClassifier(LogisticRegression(C=c, class_weight="balanced", max_iter=300)).fit(
                x_train, y[:, columns])

    def scores(model: Any, texts_: Sequence[str]) -> Any:
        out = np.tile(y[0] if len(y) else 0.0, (len(texts_), 1)).astype(np.float64)
        if len(columns):
            out[:, columns] = model.predict_proba(vectorizer.transform([str(t) for t in texts_]))
        return out

    from tuneforge.evaluate.classification import DEFAULT_THRESHOLD

    chosen, model, thresholds = 10.0, None, [DEFAULT_THRESHOLD] * len(label_names)
    candidates = (10.0, 1.0) if select_c and tune is not None and len(tune[0]) else (10.0,)
    best = -1.0
    for c in candidates:
        if model is not None and time.perf_counter() - start > time_budget_s:
            break
        candidate = fit(c) if len(columns) else None
        if tune is not None and len(tune[0]):
            tuned_scores = scores(candidate, tune[0])
            cut = tune_thresholds(tune[1], tuned_scores)
            f1 = multilabel_metrics(tune[1], tuned_scores >= np.asarray(cut), label_names)["f1_micro"]
        else:
            cut, f1 = [DEFAULT_THRESHOLD] * len(label_names), 0.0
        if f1 > best:
            best, chosen, model, thresholds = f1, c, candidate, cut
    predictions = scores(model, eval_texts) >= np.asarray(thresholds)
    metrics = multilabel_metrics(eval_sets, predictions, label_names, thresholds)
    return {**metrics, "train_rows": len(texts), "C": chosen, "class_weight": "balanced",
            "thresholds": "tuned on validation" if tune is not None and len(tune[0]) else "0.5",
            "features": "word+char" if chars else "word", "seconds": round(time.perf_counter() - start, 2)}


RIDGE_ALPHAS = (0.3, 1.0, 3.0, 10.0)  # chosen on validation (first = fallback)


def tfidf_ridge(train_texts: Sequence[str], train_targets: Sequence[float], eval_texts: Sequence[str],
                eval_targets: Sequence[float], *, valid: tuple[Sequence[str], Sequence[float]] | None = None,
                max_rows: int = MAX_ROWS, time_budget_s: float = TIME_BUDGET_S, seed: int = 0) -> dict[str, Any]:
    """Regression baseline: TF-IDF (same features as the classifiers' baseline) + ridge regression on the
    standardised target, alpha chosen on `valid` by RMSE when given (else 1.0). Returns the regression
    metrics plus train_rows, alpha, features, seconds."""
    import numpy as np
    from sklearn.linear_model import Ridge

    from tuneforge.evaluate.classification import regression_metrics

    start = time.perf_counter()
    texts, targets = _cap([str(t) for t in train_texts], [float(v) for v in train_targets], max_rows, seed)
    chars = unspaced(texts)
    vectorizer = _vectorizer(texts, chars)
    x_train = vectorizer.fit_transform(texts)
    y = np.asarray(targets)
    mean, std = float(y.mean()), float(y.std()) or 1.0

    def fit(alpha: float) -> Any:
        return Ridge(alpha=alpha).fit(x_train, (y - mean) / std)

    def predict(model: Any, texts_: Sequence[str]) -> Any:
        return model.predict(vectorizer.transform([str(t) for t in texts_])) * std + mean

    chosen, model = 1.0, None
    if valid is not None and len(valid[0]):
        best = float("inf")
        for alpha in RIDGE_ALPHAS:
            if model is not None and time.perf_counter() - start > time_budget_s:
                break
            candidate = fit(alpha)
            rmse = regression_metrics(valid[1], predict(candidate, valid[0]))["rmse"]
            if rmse < best:
                best, chosen, model = rmse, alpha, candidate
    model = model or fit(chosen)
    metrics = regression_metrics(eval_targets, predict(model, eval_texts))
    return {**metrics, "train_rows": len(texts), "alpha": chosen, "features": "word+char" if chars else "word",
            "seconds": round(time.perf_counter() - start, 2)}
