"""Token-classification metrics: entity-level precision, recall and F1 with seqeval's strict mode on IOB2 (an
entity counts only with its exact span and type), overall and per type, plus word accuracy; the
most-frequent-tag baseline; the wrong entities of a sentence for the error analysis.

>>> m = ner_metrics([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "O"]])
>>> m["precision"], m["recall"], round(m["f1"], 4), m["accuracy"]
(1.0, 0.5, 0.6667, 0.75)
>>> m["per_class"]["LOC"]["recall"], m["per_class"]["PER"]["support"]
(0.0, 1)

Scores are per word (a word's tag is its first subword's; the other subwords are never scored), so entity
counts match the data's, not the tokenizer's (transformers #14043).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from tuneforge.data.tags import entity_spans

AVERAGES = ("micro avg", "macro avg", "weighted avg")


def ner_metrics(y_true: list[list[str]], y_pred: list[list[str]]) -> dict[str, Any]:
    """precision, recall, f1 (micro over entities), accuracy (words) and per_class (per entity type)."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    words = sum(len(t) for t in y_true)
    correct = sum(a == b for t, p in zip(y_true, y_pred) for a, b in zip(t, p))
    out: dict[str, Any] = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": correct / max(1, words)}
    if not any(entity_spans(t) for t in y_true) and not any(entity_spans(p) for p in y_pred):
        return {**out, "per_class": {}}  # seqeval cannot score sentences without a single entity
    report = classification_report(y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    micro = report["micro avg"]
    out.update(precision=float(micro["precision"]), recall=float(micro["recall"]), f1=float(micro["f1-score"]))
    out["per_class"] = {kind: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                               "f1": float(v["f1-score"]), "support": int(v["support"])}
                        for kind, v in sorted(report.items()) if kind not in AVERAGES}
    return out


def most_frequent_tag(train_words: list[list[str]], train_tags: list[list[str]], words: list[list[str]]
                      ) -> list[list[str]]:
    """Each word's most frequent training tag (its exact form, else its lowercase form), O for a word training
    never shows: the lexical baseline a tagger must beat.

    >>> most_frequent_tag([["Paris", "is", "big"], ["in", "Paris"]], [["B-LOC", "O", "O"], ["O", "B-LOC"]],
    ...                   [["paris", "is", "new"]])
    [['B-LOC', 'O', 'O']]
    """
    exact: dict[str, Counter] = defaultdict(Counter)
    lower: dict[str, Counter] = defaultdict(Counter)
    for sentence, tags in zip(train_words, train_tags):
        for word, tag in zip(sentence, tags):
            exact[word][tag] += 1
            lower[word.lower()][tag] += 1
    best_exact = {w: c.most_common(1)[0][0] for w, c in exact.items()}
    best_lower = {w: c.most_common(1)[0][0] for w, c in lower.items()}
    return [[best_exact.get(w) or best_lower.get(w.lower(), "O") for w in sentence] for sentence in words]


def sentence_errors(true: list[str], pred: list[str]) -> tuple[int, list[list[Any]], list[list[Any]]]:
    """(wrong entities: missed + spurious, gold entities, predicted entities) of one sentence, entities as
    [type, first word, end word] (strict spans, as scored)."""
    gold, found = set(entity_spans(true)), set(entity_spans(pred))
    as_lists = lambda spans: [list(s) for s in sorted(spans, key=lambda s: (s[1], s[2], s[0]))]  # noqa: E731
    return len(gold ^ found), as_lists(gold), as_lists(found)


def describe_entities(words: list[str], spans: list[list[Any]]) -> list[str]:
    """Entities as "TYPE: their words" for the error analysis.

    >>> describe_entities(["Peter", "Blackburn", "said"], [["PER", 0, 2]])
    ['PER: Peter Blackburn']
    """
    return [f"{kind}: {' '.join(words[start:end])}" for kind, start, end in spans]
