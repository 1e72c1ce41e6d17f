"""Extractive question answering, pure code: the SQuAD v1.1/v2.0 exact-match and F1 definitions (the official
evaluation scripts' normalisation), the n-best span search over start/end logits, the merge of an example's
windows, and the no-answer threshold tuned for the best F1 (the v2 script's best_f1_thresh).

>>> from tuneforge.evaluate.squad import exact_match_score, f1_score
>>> exact_match_score("The Eiffel Tower!", ["eiffel tower"]), round(f1_score("the tower in Paris", ["Eiffel Tower"]), 3)
(1.0, 0.4)

Scores are fractions in [0, 1] (the official scripts print percentages). A question without an answer has the
gold answer "" (v2): predicting "" scores 1, anything else 0. No torch: the task turns logits into numpy first.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace (the official order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def _golds(golds: Sequence[str]) -> list[str]:
    """The v2 script's gold list: answers that normalise to something, or [""] for a question without one."""
    return [g for g in golds if normalize_answer(g)] or [""]


def exact_match_score(prediction: str, golds: Sequence[str]) -> float:
    return float(max(normalize_answer(prediction) == normalize_answer(g) for g in _golds(golds)))


def _f1(prediction: str, gold: str) -> float:
    pred, ref = _tokens(prediction), _tokens(gold)
    if not pred or not ref:  # an empty side scores 1 only when both are empty
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    return max(_f1(prediction, g) for g in _golds(golds))


def squad_metrics(predictions: Sequence[str], golds: Sequence[Sequence[str]], version_2: bool
                  ) -> dict[str, float]:
    """exact_match and f1 over the examples (means of the per-example maxima over gold answers); for v2 data also
    HasAns_/NoAns_ exact_match, f1 and total, as the official v2 script splits them.

    >>> squad_metrics(["Paris", ""], [["Paris"], []], version_2=True)["NoAns_f1"]
    1.0
    """
    em = np.array([exact_match_score(p, g) for p, g in zip(predictions, golds)])
    f1 = np.array([f1_score(p, g) for p, g in zip(predictions, golds)])
    out = {"exact_match": float(em.mean()) if len(em) else 0.0, "f1": float(f1.mean()) if len(f1) else 0.0}
    if version_2:
        has = np.array([bool(_golds(g)[0]) for g in golds], dtype=bool)
        for name, mask in (("HasAns", has), ("NoAns", ~has)):
            out[f"{name}_total"] = int(mask.sum())
            if mask.any():
                out[f"{name}_exact_match"] = float(em[mask].mean())
                out[f"{name}_f1"] = float(f1[mask].mean())
    return out


def window_candidates(start: np.ndarray, end: np.ndarray, char_starts: np.ndarray, char_ends: np.ndarray,
                      n_best: int, max_answer_length: int) -> tuple[float, list[tuple[float, int, int]]]:
    """(null score, up to `n_best` spans) of one window, as run_qa.py's post-processing: the `n_best` highest
    start and end logits over context tokens (char span >= 0), every pair with start <= end and at most
    `max_answer_length` tokens, scored start + end logit; spans are (score, first char, end char). The null
    score is the CLS token's (index 0) start + end.

    >>> s = np.array([5.0, 0.0, 3.0, 1.0]); e = np.array([5.0, 0.0, 1.0, 4.0])
    >>> window_candidates(s, e, np.array([-1, -1, 0, 4]), np.array([-1, -1, 3, 9]), 20, 30)
    (10.0, [(7.0, 0, 9), (5.0, 4, 9), (4.0, 0, 3)])
    """
    context = np.flatnonzero(char_starts >= 0)
    null = float(start[0] + end[0])
    if not len(context):
        return null, []
    s_idx = context[np.argsort(-start[context], kind="stable")[:n_best]]
    e_idx = context[np.argsort(-end[context], kind="stable")[:n_best]]
    scores = start[s_idx][:, None] + end[e_idx][None, :]
    length = e_idx[None, :] - s_idx[:, None] + 1
    valid = (length >= 1) & (length <= max_answer_length)
    flat = np.flatnonzero(valid.ravel())
    flat = flat[np.argsort(-scores.ravel()[flat], kind="stable")[:n_best]]
    rows, cols = np.unravel_index(flat, valid.shape)
    return null, [(float(scores[r, c]), int(char_starts[s_idx[r]]), int(char_ends[e_idx[c]]))
                  for r, c in zip(rows, cols)]


@dataclass
class Answer:
    """An example's answer after merging its windows: the best span (or none), the null score (the minimum over
    windows, as run_qa.py), `diff` = null - best span (higher: more likely unanswerable) and the probability of
    the best span among the n-best spans and the null answer."""

    text: str
    start: int
    end: int
    span_score: float
    null_score: float
    probabilities: dict[str, float] = field(default_factory=dict)  # "span" and "null"

    @property
    def diff(self) -> float:
        return self.null_score - self.span_score


def merge_windows(context: str, windows: Sequence[tuple[float, list[tuple[float, int, int]]]], n_best: int
                  ) -> Answer:
    """One example's answer from its windows' `window_candidates`."""
    spans = sorted((c for _, cands in windows for c in cands), key=lambda c: -c[0])
    unique: list[tuple[float, int, int]] = []
    for c in spans:  # the same span seen from two overlapping windows counts once (its best score)
        if all((c[1], c[2]) != (u[1], u[2]) for u in unique):
            unique.append(c)
        if len(unique) == n_best:
            break
    null = min(n for n, _ in windows) if windows else 0.0
    if not unique:
        return Answer("", 0, 0, float("-inf"), null, {"span": 0.0, "null": 1.0})
    score, first, last = unique[0]
    logits = np.array([u[0] for u in unique] + [null])
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return Answer(context[first:last], first, last, score, null, {"span": float(p[0]), "null": float(p[-1])})


def best_threshold(diffs: np.ndarray, span_f1: np.ndarray, span_em: np.ndarray, has_answer: np.ndarray
                   ) -> tuple[float, float, float]:
    """(threshold, F1, exact match) of the no-answer threshold with the best F1 on these examples: an example
    abstains when its diff (null - best span score) is above the threshold. The official v2 script's
    best_f1_thresh, except that ties between equal diffs are taken together, the all-abstain start is placed
    below every diff (the script starts at 0.0) and the threshold is the midpoint between the last diff answered
    and the next one (the script takes the last diff itself, so that on well separated validation data a new
    answerable question just beyond it abstains). `span_f1`/`span_em`: the span's scores (0 for an unanswerable
    question).

    >>> best_threshold(np.array([-2.0, 1.0, 3.0]), np.array([1.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]),
    ...                np.array([True, False, False]))
    (-0.5, 1.0, 1.0)
    """
    n = len(diffs)
    if n == 0:
        return 0.0, 0.0, 0.0
    finite = np.isfinite(diffs)
    order = np.argsort(diffs[finite], kind="stable")
    index = np.flatnonzero(finite)[order]
    # answering example i instead of abstaining changes the score by its span score (an answerable question) or
    # by -1 (an unanswerable one, whose "" was right)
    gain_f1 = np.where(has_answer, span_f1, -1.0)[index]
    gain_em = np.where(has_answer, span_em, -1.0)[index]
    base = float((~has_answer).sum())
    best = (base, base, float(diffs[finite].min() - 1.0) if finite.any() else 0.0)
    f1_total, em_total = base, base
    values = diffs[index]
    for k in range(len(index)):
        f1_total += float(gain_f1[k])
        em_total += float(gain_em[k])
        if k + 1 < len(index) and values[k + 1] == values[k]:
            continue  # equal diffs go together: a threshold cannot split them
        if f1_total > best[0]:  # between this diff and the next: no validation question sits on the edge
            edge = float(values[k] + values[k + 1]) / 2 if k + 1 < len(index) else float(values[k])
            best = (f1_total, em_total, edge)
    return best[2], float(best[0]) / n, float(best[1]) / n


def predicted_text(answer: Answer, threshold: float | None) -> str:
    """The answer text, or "" when the example abstains (threshold None: never, SQuAD v1)."""
    return "" if threshold is not None and answer.diff > threshold else answer.text


def answer_record(answer: Answer, threshold: float | None) -> dict[str, Any]:
    """What predict returns: {answer, start, end, score}; an abstention is answer "" with start = end = 0 and the
    probability of no answer as its score."""
    if (threshold is not None and answer.diff > threshold) or answer.span_score == float("-inf"):
        return {"answer": "", "start": 0, "end": 0, "score": answer.probabilities.get("null", 1.0)}
    return {"answer": answer.text, "start": answer.start, "end": answer.end,
            "score": answer.probabilities.get("span", 0.0)}
