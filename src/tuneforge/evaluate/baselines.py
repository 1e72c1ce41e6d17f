"""Baselines a model must beat, computed honestly from the run's own data (no model involved).

>>> from tuneforge.evaluate.baselines import lead_sentence
>>> lead_sentence("The parcel never arrived. I waited two weeks.")
'The parcel never arrived.'

Each task declares its baseline (TaskSpec.baseline, a function here): classification always predicts the most
frequent training label (majority class); summarization takes the first sentence of the source (lead-1), scored
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
    if table is None or len(table) == 0 or not spec.baseline:
        return {}
    return load_declared(spec.baseline)(data, table, cfg)


def majority_class(data: PreparedData, table: Table, cfg: Any) -> dict[str, dict[str, Any]]:
    """Always the most frequent training label."""
    from tuneforge.evaluate.classification import majority_baseline

    d = cfg.data
    index = {n: i for i, n in enumerate(data.label_names)}
    train = [index[v] for v in data.splits["train"].columns[d.label_column]]
    held_out = [index[v] for v in table.columns[d.label_column]]
    m = majority_baseline(train, held_out, data.label_names)
    return {"majority_class": {k: v for k, v in m.items() if isinstance(v, float)}}


def lead_1(data: PreparedData, table: Table, cfg: Any) -> dict[str, dict[str, Any]]:
    """The first sentence of each source as its summary."""
    from tuneforge.evaluate.rouge import rouge_scores

    d = cfg.data
    leads = [lead_sentence(s) for s in table.columns[d.text_column]]
    return {"lead_1": rouge_scores(leads, [str(t) for t in table.columns[d.target_column]])}
