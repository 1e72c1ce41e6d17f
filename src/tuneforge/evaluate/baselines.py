"""Baselines a model must beat, computed honestly from the run's own data (no model involved).

>>> from tuneforge.evaluate.baselines import lead_sentence
>>> lead_sentence("The parcel never arrived. I waited two weeks.")
'The parcel never arrived.'

Classification: always predict the most frequent training label (majority class). Summarization: the
first sentence of the source (lead-1), scored with the same ROUGE as the model. Causal LM: none that is
comparable to a fine-tuned model's perplexity without another model, so none is reported.
"""

from __future__ import annotations

from typing import Any

from tuneforge.data.prepared import PreparedData


def lead_sentence(text: str) -> str:
    from tuneforge.evaluate.rouge import split_sentences

    sentences = split_sentences(text)
    return sentences[0] if sentences else ""


def baselines(task: str, data: PreparedData, split_name: str, cfg: Any) -> dict[str, dict[str, Any]]:
    """{baseline name: metrics on `split_name`} for the task; empty when none applies."""
    table = data.splits.get(split_name)
    if table is None or len(table) == 0:
        return {}
    d = cfg.data
    if task == "classification":
        from tuneforge.evaluate.classification import majority_baseline

        index = {n: i for i, n in enumerate(data.label_names)}
        train = [index[v] for v in data.splits["train"].columns[d.label_column]]
        held_out = [index[v] for v in table.columns[d.label_column]]
        m = majority_baseline(train, held_out, data.label_names)
        return {"majority_class": {k: v for k, v in m.items() if isinstance(v, float)}}
    if task == "seq2seq":
        from tuneforge.evaluate.rouge import rouge_scores

        leads = [lead_sentence(s) for s in table.columns[d.text_column]]
        return {"lead_1": rouge_scores(leads, [str(t) for t in table.columns[d.target_column]])}
    return {}
