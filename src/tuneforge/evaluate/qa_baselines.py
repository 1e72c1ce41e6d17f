"""Baselines an extractive QA model must beat, from the held-out rows alone (no model, no training):

- **sliding_window**: the lexical idea behind the SQuAD paper's sliding-window baseline (Richardson et al. 2013;
  Rajpurkar et al. 2016): the answer sits near the question's words. The context sentence sharing the most
  question words is picked (the earliest on a tie); in it, every span of 1 to 4 words that holds no question word
  and neither starts nor ends with a function word is scored by the sum of 1 / distance to the sentence's
  question words; the best span wins (the earliest and shortest on a tie).
- **first_sentence**: the context's first sentence.
- **no_answer** (SQuAD v2 data only): abstain on every question.

>>> from tuneforge.evaluate.qa_baselines import sliding_window_answer
>>> sliding_window_answer("Who wrote Hamlet?", "Hamlet is a tragedy. Shakespeare wrote Hamlet in 1601.")
'Shakespeare'

Scored with the same SQuAD exact match and F1 as the model (evaluate/squad.py).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from tuneforge.data.prepared import PreparedData
from tuneforge.data.table import Table
from tuneforge.evaluate.squad import normalize_answer, squad_metrics

WORD = re.compile(r"\w+", re.UNICODE)
SENTENCE = re.compile(r"\S.*?(?:[.!?](?=\s|$)|$)", re.DOTALL)
MAX_SPAN_WORDS = 4
STOP = frozenset(("a", "an", "the", "of", "in", "on", "at", "to", "is", "are", "was", "were", "be", "by", "for", "and",
                  "or", "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "does", "do", "did",
                  "it", "its", "this", "that", "with", "as", "from"))


def sliding_window_answer(question: str, context: str) -> str:
    asked = {w for w in normalize_answer(question).split() if w not in STOP}
    best_sentence: list[re.Match] = []
    best_overlap = -1
    for sentence in SENTENCE.finditer(context):
        words = list(WORD.finditer(context, sentence.start(), sentence.end()))
        overlap = len({normalize_answer(m.group()) for m in words} & asked)
        if words and overlap > best_overlap:
            best_sentence, best_overlap = words, overlap
    words = best_sentence
    if not words:
        return ""
    norm = [normalize_answer(m.group()) for m in words]
    q_positions = np.array([k for k, w in enumerate(norm) if w in asked], dtype=np.float64)
    best, best_span = -1.0, (0, 0)
    for i in range(len(words)):
        for j in range(i, min(len(words), i + MAX_SPAN_WORDS)):
            if norm[j] in asked:
                break  # a span holding a question word is not its answer
            if norm[i] in STOP or norm[j] in STOP or not norm[i] or not norm[j]:
                continue
            left, right = i - q_positions[q_positions < i], q_positions[q_positions > j] - j
            score = float((1.0 / left).sum() + (1.0 / right).sum())
            if score > best:
                best, best_span = score, (i, j)
    i, j = best_span
    return context[words[i].start():words[j].end()]


def question_answering(data: PreparedData, table: Table, cfg: Any) -> dict[str, dict[str, Any]]:
    """The task's baselines on `table` (TaskSpec.baseline)."""
    from tuneforge.evaluate.baselines import lead_sentence

    d = cfg.data
    questions, contexts = table.columns[d.question_column], table.columns[d.context_column]
    golds = [a["text"] for a in table.columns[d.answers_column]]
    v2 = bool(data.info.get("version_2_with_negative"))
    out = {"sliding_window": squad_metrics([sliding_window_answer(q, c) for q, c in zip(questions, contexts)],
                                           golds, v2),
           "first_sentence": squad_metrics([lead_sentence(c) for c in contexts], golds, v2)}
    if v2:
        out["no_answer"] = squad_metrics([""] * len(golds), golds, v2)
    return out
