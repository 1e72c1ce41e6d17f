"""Baselines a model must beat, computed honestly from the run's own data (no model involved).

>>> from tuneforge.evaluate.baselines import lead_sentence
>>> lead_sentence("The parcel never arrived. I waited two weeks.")
'The parcel never arrived.'

Each task declares its baseline (TaskSpec.baseline, a function here): classification reports the majority class
(always the most frequent training label) and TF-IDF + logistic regression, with the model's metrics;
summarization takes the first sentence of the source (lead-1), scored
with the same ROUGE as the model. Causal LM: none that is comparable to a fine-tuned model's perplexity without
another model, so none is reported.
"""

from __future__ import annotations

from typing import Any

from tuneforge.data.prepared import PreparedData
from tuneforge.data.table import Table


def lead_sentence(text: str) -> str:
    from tuneforge.evaluate.rouge import split_sentences

    sentences = split_sentences(text)
    return sentences[0] if sentences else ""


def baselines(task: str, data: PreparedData, split_name: str, cfg: Any) -> dict[str, dict[str, Any]]:
    """{baseline name: metrics on `split_name`} for the task; empty when it declares none."""
    from tuneforge.tasks import get_spec, load_declared

    table = data.splits.get(split_name)
    spec = get_spec(task)
    if table is None or len(table) == 0 or not spec.baseline or not cfg.training.baselines:
        return {}
    return load_declared(spec.baseline)(data, table, cfg)


def classification(data: PreparedData, table: Table, cfg: Any) -> dict[str, dict[str, Any]]:
    """The majority class (always the most frequent training label) and TF-IDF + logistic regression
    (evaluate/tfidf.py: settings chosen on the validation split when `table` is another split)."""
    from tuneforge.evaluate.classification import majority_baseline
    from tuneforge.evaluate.tfidf import join_pairs, tfidf_logreg

    d = cfg.data
    index = {n: i for i, n in enumerate(data.label_names)}

    def rows(split: Table) -> tuple[list[str], list[int]]:
        pairs = split.columns[d.text_pair_column] if d.text_pair_column else None
        return join_pairs(split.columns[d.text_column], pairs), [index[v] for v in split.columns[d.label_column]]

    (train_x, train_y), (held_x, held_y) = rows(data.splits["train"]), rows(table)
    valid = data.splits.get("validation")
    m = majority_baseline(train_y, held_y, data.label_names)
    tfidf = tfidf_logreg(train_x, train_y, held_x, held_y, data.label_names, seed=cfg.training.seed,
                         valid=rows(valid) if valid is not None and valid is not table and len(valid) else None)
    return {"majority_class": {k: v for k, v in m.items() if isinstance(v, float)},
            "tfidf_logreg": {k: v for k, v in tfidf.items() if isinstance(v, (int, float, str))}}


def lead_1(data: PreparedData, table: Table, cfg: Any) -> dict[str, dict[str, Any]]:
    """The first sentence of each source as its summary."""
    from tuneforge.evaluate.rouge import rouge_scores

    d = cfg.data
    leads = [lead_sentence(s) for s in table.columns[d.text_column]]
    return {"lead_1": rouge_scores(leads, [str(t) for t in table.columns[d.target_column]])}
