"""Check an export against the model it came from, on the run's validation data, and time both.

Agreement, for every task: both models see the same tokenized batches, made by the task's own collate, and
their `task.logits` are compared wherever `task.targets` scores them: the share of argmax predictions that match
(per example for a classifier, per target token under teacher forcing for generative tasks) and the largest
|logit| difference there; the task names the measure (TaskSpec.verify_measure). The metric change each task
declares (TaskSpec.verify_metrics), original vs export:
  classes          accuracy and f1_macro of each against the true labels; multi-label models (config problem_type)
                   are compared by label-set agreement at each one's saved thresholds (micro/macro F1), regression
                   models by the share of values within 1% of the target's std (RMSE, R²)
  generated_rouge  ROUGE of the texts each model generates (ONNX exports decode greedily, so the original is then
                   also decoded greedily)
  perplexity       loss and perplexity of each on the target tokens (rows unpacked, so both see the same attention
                   masks)
  entities         entity F1 and word accuracy of each (token classification, windows merged per sentence)
  answers          exact match and F1 of each (question answering, each at its saved no-answer threshold) and
                   the share of questions given the same answer
Both models run on the export's device (the CPU for ONNX and int8 exports, else the best one), each batch moved
to it. Latency: batch-1 `predict` calls through the same code the server uses, original and export interleaved
per example; p50 and mean in milliseconds, speedup = original p50 / export p50 (for ONNX exports of generative
models the original is timed with greedy decoding too, like for like).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import statistics
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from tuneforge.errors import UserError
from tuneforge.tasks import get_spec


def validation_data(loaded: Any, data_file: str | None, max_examples: int | None) -> tuple[Any, Any, Any]:
    """(PreparedData with only the validation split, its TokenizedSplit, config used): the run's own
    validation split (or `data_file`), read and tokenized by the task exactly as in training."""
    cfg = loaded.config
    d = cfg.data
    if data_file:
        d = dataclasses.replace(d, train_file=data_file, validation_file=data_file, test_file=None,
                                dataset_name=None, max_train_samples=None)
    # packing=False: rows with attention masks, the same inputs for both runtimes (tasks that never pack ignore it)
    d = dataclasses.replace(d, max_eval_samples=max_examples, test_file=None, packing=False)
    cfg = dataclasses.replace(cfg, data=d)
    try:
        data = loaded.task.prepare_data(cfg)
    except UserError as err:
        raise UserError(f"export verification reads the run's validation data: {err} (give --data FILE with the "
                        "training columns to verify on another file)") from None
    data.splits = {"validation": data.splits["validation"]}
    split = loaded.task.tokenize(loaded.tokenizer, data, cfg, loaded.max_length or 512)["validation"]
    return data, split, cfg


def _batches(split: Any, size: int) -> list[np.ndarray]:
    from tuneforge.data.batching import eval_order

    return eval_order(split.batch_lengths, size)


def _agreement(original: Any, exported: Any, split: Any, batch_size: int) -> dict[str, Any]:
    """Both models on the same batches, compared where `task.targets` scores `task.logits`: argmax agreement,
    max |logit| difference, and each model's summed cross-entropy and predictions there."""
    import torch
    import torch.nn.functional as F

    from tuneforge.engine.step import to_device

    task, pad = original.task, original.tokenizer.pad_token_id or 0
    same = total = 0
    diff, loss = 0.0, [0.0, 0.0]
    targets_seen: list[int] = []
    predictions: list[list[int]] = [[], []]
    with torch.inference_mode():
        for idx in _batches(split, batch_size):
            batch = task.collate(split, idx, pad)
            targets = task.targets(batch)
            mask = targets != -100
            outs = [task.logits(m.model, to_device(batch, m.device)).float().cpu() for m in (original, exported)]
            for j, logits in enumerate(outs):
                loss[j] += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 ignore_index=-100, reduction="sum"))
                predictions[j] += logits.argmax(-1)[mask].tolist()
            targets_seen += targets[mask].tolist()
            diff = max(diff, float((outs[0] - outs[1]).abs()[mask].max())) if bool(mask.any()) else diff
            same += int(((outs[0].argmax(-1) == outs[1].argmax(-1)) & mask).sum())
            total += int(mask.sum())
    return {"agreement": same / max(1, total), "max_logit_diff": diff, "count": total,
            "loss": [v / max(1, total) for v in loss], "predictions": predictions, "targets": targets_seen}


def _outputs(original: Any, exported: Any, split: Any, batch_size: int) -> tuple[list[Any], Any]:
    """Both models' logits (rows x outputs) on the same batches, and the targets, in batch order."""
    import torch

    from tuneforge.engine.step import to_device

    task, pad = original.task, original.tokenizer.pad_token_id or 0
    outs: list[list[Any]] = [[], []]
    targets = []
    with torch.inference_mode():
        for idx in _batches(split, batch_size):
            batch = task.collate(split, idx, pad)
            targets.append(task.targets(batch).double().numpy())
            for j, m in enumerate((original, exported)):
                outs[j].append(task.logits(m.model, to_device(batch, m.device)).double().cpu().numpy())
    return [np.concatenate(o) for o in outs], np.concatenate(targets)


def _label_sets(original: Any, exported: Any, data: Any, split: Any, cfg: Any) -> dict[str, Any]:
    """Multi-label: the share of rows whose predicted label set (each model at the thresholds in its own config)
    is identical, max |logit| difference, micro/macro F1 of each."""
    from tuneforge.evaluate.classification import multilabel_metrics
    from tuneforge.tasks.multilabel import label_names, thresholds_of

    (a, b), y = _outputs(original, exported, split, 32)
    names = label_names(original.model.config)
    sets = [1 / (1 + np.exp(-logits)) >= thresholds_of(m.model.config, names)
            for logits, m in ((a, original), (b, exported))]
    keys = ("f1_micro", "f1_macro")
    scores = [multilabel_metrics(y, p, names) for p in sets]
    return {"measure": "label-set agreement (the same predicted set, at the saved thresholds)",
            "agreement": float((sets[0] == sets[1]).all(1).mean()) if len(y) else 1.0,
            "max_logit_diff": float(np.abs(a - b).max()) if len(y) else 0.0, "examples": len(y),
            "metrics": {"original": {k: scores[0][k] for k in keys}, "exported": {k: scores[1][k] for k in keys}}}


REGRESSION_TOLERANCE = 0.01  # regression agreement: values within this share of the target's std


def _values(original: Any, exported: Any, data: Any, split: Any, cfg: Any) -> dict[str, Any]:
    """Regression: the share of rows whose two predictions differ by at most 1% of the validation target's
    standard deviation (scale-free), the max |difference| (in target units), RMSE and R² of each."""
    from tuneforge.evaluate.classification import regression_metrics

    (a, b), y = _outputs(original, exported, split, 32)
    a, b = a[:, 0], b[:, 0]
    tolerance = REGRESSION_TOLERANCE * (float(np.std(y)) or 1.0)
    keys = ("rmse", "r2")
    scores = [regression_metrics(y, p) for p in (a, b)]
    return {"measure": f"values within {REGRESSION_TOLERANCE:.0%} of the target's std ({tolerance:.4g})",
            "agreement": float((np.abs(a - b) <= tolerance).mean()) if len(y) else 1.0,
            "max_logit_diff": float(np.abs(a - b).max()) if len(y) else 0.0, "examples": len(y),
            "metrics": {"original": {k: scores[0][k] for k in keys}, "exported": {k: scores[1][k] for k in keys}}}


def _classes(original: Any, exported: Any, data: Any, split: Any, cfg: Any) -> dict[str, Any]:
    from tuneforge.evaluate.classification import classification_metrics

    problem = getattr(original.model.config, "problem_type", None)  # transformers' spelling (tasks/classification.py)
    if problem == "multi_label_classification":
        return _label_sets(original, exported, data, split, cfg)
    if problem == "regression":
        return _values(original, exported, data, split, cfg)
    out = _agreement(original, exported, split, 32)
    names = data.label_names
    m_orig, m_exp = (classification_metrics(out["targets"], p, names) for p in out["predictions"])
    keys = ("accuracy", "f1_macro")
    return {"agreement": out["agreement"], "max_logit_diff": out["max_logit_diff"], "examples": out["count"],
            "metrics": {"original": {k: m_orig[k] for k in keys}, "exported": {k: m_exp[k] for k in keys}}}


def _generated_rouge(original: Any, exported: Any, data: Any, split: Any, cfg: Any, generate_examples: int = 100
                     ) -> dict[str, Any]:
    from tuneforge.evaluate.rouge import rouge_scores

    out = _agreement(original, exported, split, 16)
    table = data.splits["validation"]
    n = min(generate_examples, len(table))
    texts, refs = table.columns[cfg.data.text_column][:n], table.columns[cfg.data.target_column][:n]
    greedy = exported.artifact.format == "onnx"
    with _decoding_like(original, exported):
        a = [r["generated_text"] for r in original.predict(texts, batch_size=16)]
    b = [r["generated_text"] for r in exported.predict(texts, batch_size=16)]
    keys = ("rouge1", "rouge2", "rougeL")
    ra, rb = rouge_scores(a, refs), rouge_scores(b, refs)
    return {"agreement": out["agreement"], "max_logit_diff": out["max_logit_diff"], "tokens": out["count"],
            "generated_examples": n, "same_generated_text": sum(x == y for x, y in zip(a, b)) / max(1, n),
            "decoding": "greedy (ONNX exports decode greedily; the original too, for this comparison)" if greedy
            else f"the run's settings (num_beams={getattr(original.model.generation_config, 'num_beams', 1)})",
            "metrics": {"original": {k: ra[k] for k in keys}, "exported": {k: rb[k] for k in keys}}}


@contextlib.contextmanager
def _decoding_like(original: Any, exported: Any) -> Iterator[None]:
    """ONNX exports decode greedily: the original does too while they are compared (and timed)."""
    saved = getattr(original.model, "generation_config", None)  # classifiers have none
    if exported.artifact.format != "onnx" or saved is None:
        yield
        return
    original.model.generation_config = copy.deepcopy(saved)
    original.model.generation_config.num_beams = 1
    original.model.generation_config.do_sample = False
    try:
        yield
    finally:
        original.model.generation_config = saved


def _perplexity(original: Any, exported: Any, data: Any, split: Any, cfg: Any) -> dict[str, Any]:
    out = _agreement(original, exported, split, 8)
    ppl = [float(np.exp(min(v, 50.0))) for v in out["loss"]]
    return {"agreement": out["agreement"], "max_logit_diff": out["max_logit_diff"], "tokens": out["count"],
            "metrics": {"original": {"loss": out["loss"][0], "perplexity": ppl[0]},
                        "exported": {"loss": out["loss"][1], "perplexity": ppl[1]}}}


def _entities(original: Any, exported: Any, data: Any, split: Any, cfg: Any) -> dict[str, Any]:
    """Tag agreement on the labelled first subwords, and each model's entity F1 and word accuracy from the task's
    own evaluation (windows merged per sentence)."""
    from tuneforge.engine.evaluation import evaluate

    out = _agreement(original, exported, split, 32)
    keys = ("f1", "accuracy")
    scores = [evaluate(m.model, m.tokenizer, m.task, split, data, cfg, m.device) for m in (original, exported)]
    sentences = [" ".join(words) for words in data.splits["validation"].columns[cfg.data.tokens_column]]
    return {"agreement": out["agreement"], "max_logit_diff": out["max_logit_diff"], "tokens": out["count"],
            "metrics": {"original": {k: scores[0][k] for k in keys}, "exported": {k: scores[1][k] for k in keys}},
            "latency_texts": sentences}


def _answers(original: Any, exported: Any, data: Any, split: Any, cfg: Any) -> dict[str, Any]:
    """Question answering: start/end token agreement on the windows (argmax of each), the share of questions
    given the same answer (text and offsets) by `predict`, each at the threshold in its own config.json, and the
    exact match and F1 of each against the gold answers."""
    from tuneforge.evaluate.squad import squad_metrics

    out = _agreement(original, exported, split, 16)
    table = data.splits["validation"]
    d = cfg.data
    questions = [str(q) for q in table.columns[d.question_column]]
    contexts = [str(c) for c in table.columns[d.context_column]]
    golds = [a["text"] for a in table.columns[d.answers_column]]
    answers = [m.predict(questions, contexts, batch_size=16) for m in (original, exported)]
    v2 = any(not g for g in golds)
    scores = [squad_metrics([a["answer"] for a in found], golds, v2) for found in answers]
    keys = ("exact_match", "f1")
    same = sum(a == b for a, b in zip(*[[(r["answer"], r["start"], r["end"]) for r in found] for found in answers]))
    return {"agreement": out["agreement"], "max_logit_diff": out["max_logit_diff"], "positions": out["count"],
            "same_answer": same / max(1, len(questions)), "questions": len(questions),
            "metrics": {"original": {k: scores[0][k] for k in keys}, "exported": {k: scores[1][k] for k in keys}},
            "latency_texts": questions, "latency_pairs": contexts}


# TaskSpec.verify_metrics -> the comparison that reports it
VERIFY_METRICS = {"classes": _classes, "generated_rouge": _generated_rouge, "perplexity": _perplexity,
                  "entities": _entities, "answers": _answers}


def measure_latency(models: list[Any], texts: list[str], warmup: int = 3, max_new_tokens: int | None = None,
                    pairs: list[str] | None = None) -> list[dict[str, float]]:
    """Batch-1 predict latency of each model on the same texts (with their `pairs`: QA contexts), interleaved per
    example."""
    import torch

    kwargs = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    times: list[list[float]] = [[] for _ in models]
    second = pairs if pairs is not None else [None] * len(texts)
    with torch.inference_mode():
        for text, pair in list(zip(texts, second))[:warmup]:
            for m in models:
                m.predict([text], [pair] if pair is not None else None, batch_size=1, **kwargs)
        for text, pair in zip(texts, second):
            for j, m in enumerate(models):
                start = time.perf_counter()
                m.predict([text], [pair] if pair is not None else None, batch_size=1, **kwargs)
                times[j].append((time.perf_counter() - start) * 1000)
    return [{"p50_ms": statistics.median(t), "mean_ms": statistics.fmean(t), "calls": len(t)} for t in times]


def verify_export(original: Any, exported: Any, min_agreement: float, prepared: tuple[Any, Any, Any],
                  latency_examples: int = 50) -> dict[str, Any]:
    """The export report (without sizes): agreement, metrics and their change, latency, passed or not.
    `prepared` is what validation_data returned."""
    data, split, cfg = prepared
    spec = get_spec(cfg.task)
    result = VERIFY_METRICS[spec.verify_metrics](original, exported, data, split, cfg)
    metrics = result.pop("metrics")
    change = {k: metrics["exported"][k] - metrics["original"][k] for k in metrics["original"]}
    table = data.splits["validation"]
    column = cfg.data.prompt_column if cfg.data.data_format == "prompt_completion" else cfg.data.text_column
    texts = result.pop("latency_texts", None)  # a comparison may say what to time (a tagger: its sentences)
    pairs = result.pop("latency_pairs", None)  # and their second texts (QA: the contexts)
    if texts is None:
        texts = [str(t) for t in table.columns[column]] if cfg.data.data_format != "chat" else []
    n_latency = min(latency_examples, 20) if spec.generates else latency_examples
    if spec.prompt_shares_context and texts:  # documents as prompts: their first tokens, so prompt + output fit
        texts = original.truncate(texts[:n_latency], min(64, (original.max_length or 128) // 2))
    gen_tokens = 32 if spec.generates else None
    with _decoding_like(original, exported):
        lat = measure_latency([original, exported], texts[:n_latency], max_new_tokens=gen_tokens,
                              pairs=pairs[:n_latency] if pairs else None) if texts else []
    measure = result.pop("measure", spec.verify_measure)  # a problem type may measure otherwise (multi-label)
    agreement = {"measure": measure, "value": result.pop("agreement"), "min_required": min_agreement,
                 **result}
    return {"validation": {"source": table.source, "rows": len(table)},
            "agreement": agreement, "metrics": {**metrics, "change": change},
            "latency": {"batch_size": 1, "original": lat[0], "exported": lat[1],
                        "speedup": lat[0]["p50_ms"] / lat[1]["p50_ms"],
                        **({"max_new_tokens": gen_tokens} if gen_tokens else {})} if lat else {},
            "passed": agreement["value"] >= min_agreement}
