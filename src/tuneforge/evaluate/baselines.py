"""Baselines a model must beat, computed honestly from the run's own data (no model involved).

>>> from tuneforge.evaluate.baselines import lead_sentence
>>> lead_sentence("The parcel never arrived. I waited two weeks.")
'The parcel never arrived.'

Each task declares its baseline (TaskSpec.baseline, a function here): classification reports the majority class
(always the most frequent training label) and TF-IDF + logistic regression, with the model's metrics (multi-label:
TF-IDF + one-vs-rest logistic regression with the model's threshold rule; regression: the training mean and
TF-IDF + ridge);
summarization takes the first sentence of the source (lead-1), scored
with the same ROUGE as the model; token classification memorises each word's most frequent training tag (scored
with the same seqeval metrics). Causal LM: none that is comparable to a fine-tuned model's perplexity without
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
    from tuneforge.data.labels import MULTI_LABEL, REGRESSION
    from tuneforge.evaluate.classification import majority_baseline
    from tuneforge.evaluate.tfidf import join_pairs, tfidf_logreg

    problem = data.info.get("problem_type") or cfg.data.problem_type
    if problem == MULTI_LABEL:
        return _multi_label(data, table, cfg)
    if problem == REGRESSION:
        return _regression(data, table, cfg)
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


def _texts(split: Table, cfg: Any) -> list[str]:
    from tuneforge.evaluate.tfidf import join_pairs

    d = cfg.data
    return join_pairs(split.columns[d.text_column], split.columns[d.text_pair_column] if d.text_pair_column else None)


def _multi_label(data: PreparedData, table: Table, cfg: Any) -> dict[str, dict[str, Any]]:
    """TF-IDF + one-vs-rest logistic regression, thresholds tuned on the validation split like the model's (also
    when the validation split is the one evaluated: the model's validation scores are tuned on it too)."""
    from tuneforge.data.labels import multi_hot
    from tuneforge.evaluate.tfidf import tfidf_ovr_logreg

    column, names = cfg.data.label_column, data.label_names
    valid = data.splits.get("validation")
    tune = (_texts(valid, cfg), multi_hot(list(valid.columns[column]), names)) if valid is not None and len(valid) \
        else None
    train = data.splits["train"]
    m = tfidf_ovr_logreg(_texts(train, cfg), multi_hot(list(train.columns[column]), names), _texts(table, cfg),
                         multi_hot(list(table.columns[column]), names), names, tune=tune,
                         select_c=valid is not None and valid is not table, seed=cfg.training.seed)
    return {"tfidf_ovr_logreg": {k: v for k, v in m.items() if isinstance(v, (int, float, str))}}


def _regression(data: PreparedData, table: Table, cfg: Any) -> dict[str, dict[str, Any]]:
    """The training mean, and TF-IDF + ridge regression (alpha chosen on validation when it is not the
    evaluated split)."""
    from tuneforge.data.labels import parse_targets
    from tuneforge.evaluate.classification import mean_baseline
    from tuneforge.evaluate.tfidf import tfidf_ridge

    column = cfg.data.label_column
    valid = data.splits.get("validation")
    named = {"train": data.splits["train"], "held": table, **({"validation": valid} if valid is not None else {})}
    y = parse_targets(named, column)
    ridge = tfidf_ridge(_texts(named["train"], cfg), y["train"], _texts(table, cfg), y["held"],
                        valid=(_texts(valid, cfg), y["validation"]) if valid is not None and valid is not table
                        and len(valid) else None, seed=cfg.training.seed)
    return {"training_mean": mean_baseline(y["train"], y["held"]),
            "tfidf_ridge": {k: v for k, v in ridge.items() if isinstance(v, (int, float, str))}}


def lead_1(data: PreparedData, table: Table, cfg: Any) -> dict[str, dict[str, Any]]:
    """The first sentence of each source as its summary."""
    from tuneforge.evaluate.rouge import rouge_scores

    d = cfg.data
    leads = [lead_sentence(s) for s in table.columns[d.text_column]]
    return {"lead_1": rouge_scores(leads, [str(t) for t in table.columns[d.target_column]])}


def most_frequent_tag(data: PreparedData, table: Table, cfg: Any) -> dict[str, dict[str, Any]]:
    """Token classification: each word's most frequent training tag (O for an unseen word), scored with the
    model's seqeval metrics (evaluate/ner.py)."""
    from tuneforge.evaluate.ner import most_frequent_tag as memorise
    from tuneforge.evaluate.ner import ner_metrics

    d = cfg.data
    train = data.splits["train"]
    guessed = memorise(list(train.columns[d.tokens_column]), list(train.columns[d.tags_column]),
                       list(table.columns[d.tokens_column]))
    m = ner_metrics([list(t) for t in table.columns[d.tags_column]], guessed)
    return {"most_frequent_tag": {k: v for k, v in m.items() if isinstance(v, float)}}
