"""Multi-label pieces of the classification task (data.problem_type multi_label_classification): sigmoid + BCE,
per-label decision thresholds tuned on the validation split, and the predictions that use them.

>>> from tuneforge.tasks.multilabel import predict_rows
>>> import numpy as np
>>> predict_rows(np.array([[0.9, 0.3]]), ["sports", "politics"], np.array([0.5, 0.25]))[0]["labels"]
['sports', 'politics']

Where the thresholds live: `config.json` of the saved model, as the custom field `label_thresholds` (label name ->
threshold), so that they travel with the weights into `tuneforge export` (safetensors and ONNX copy the config),
`tuneforge.load`, the server and the model card; a label missing there uses 0.5.

How they are chosen (docs/classification-problem-types.md): every evaluation of the validation split during
training tunes each label's threshold on that split's scores (evaluate/classification.py tune_thresholds) and
writes them into the model's config; the metrics of that evaluation are those at the tuned thresholds (plus
`f1_micro_untuned`, at 0.5). The thresholds are remembered per set of weights (a fingerprint of the trainable
parameters), so when the engine restores the best checkpoint (load_state_dict) the thresholds tuned for those
very weights come back with them; every other split (test, `tuneforge evaluate`) is scored at the saved
thresholds, never tuned on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tuneforge.evaluate.classification import DEFAULT_THRESHOLD, multilabel_metrics, row_f1, tune_thresholds

THRESHOLDS_KEY = "label_thresholds"  # the config.json field


def label_names(model_config: Any) -> list[str]:
    id2label = model_config.id2label
    return [id2label[i] for i in range(len(id2label))]


def thresholds_of(model_config: Any, names: list[str]) -> np.ndarray:
    """The saved thresholds in label-id order (0.5 for a label without one)."""
    saved = getattr(model_config, THRESHOLDS_KEY, None) or {}
    return np.asarray([float(saved.get(n, DEFAULT_THRESHOLD)) for n in names], dtype=np.float64)


def set_thresholds(model_config: Any, names: list[str], thresholds: Any) -> None:
    setattr(model_config, THRESHOLDS_KEY, {n: float(t) for n, t in zip(names, thresholds)})


def weights_fingerprint(model: Any) -> tuple[float, ...]:
    """The sums of the trainable parameters: equal for the same weights (a restored checkpoint), different
    after any optimizer step."""
    import torch

    with torch.no_grad():
        return tuple(float(p.detach().double().sum()) for p in model.parameters() if p.requires_grad)


class Tuning:
    """The thresholds tuned for each set of weights of one training run; restores them into the model's config
    when its weights are loaded back (the best checkpoint at the end of training)."""

    def __init__(self) -> None:
        self.by_weights: dict[tuple[float, ...], list[float]] = {}

    def attach(self, model: Any) -> None:
        model.register_load_state_dict_post_hook(self._restored)

    def remember(self, fingerprint: tuple[float, ...], thresholds: list[float]) -> None:
        self.by_weights[fingerprint] = thresholds

    def _restored(self, module: Any, incompatible: Any) -> None:
        found = self.by_weights.get(weights_fingerprint(module))
        if found is not None:
            set_thresholds(module.config, label_names(module.config), found)


def loss(logits: Any, labels: Any, pos_weight: list[float] | None) -> Any:
    """Sum over rows of each row's mean BCE over its labels (transformers' BCEWithLogitsLoss mean, per row, so
    that the engine's division by rows gives the same value); `pos_weight` weighs each label's positives."""
    import torch
    import torch.nn.functional as F

    weight = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device) if pos_weight else None
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), pos_weight=weight,
                                              reduction="none").mean(-1).sum()


def init_state(model: Any) -> dict[str, Any]:
    return {"model": model, "fingerprint": weights_fingerprint(model),
            "thresholds": thresholds_of(model.config, label_names(model.config))}


def eval_step(logits: Any, batch: dict[str, Any], state: dict[str, Any]) -> None:
    import torch.nn.functional as F

    labels = batch["labels"].to(logits.dtype)
    state["loss_sum"] = state.get("loss_sum", 0.0) + float(
        F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(-1).sum())
    state.setdefault("scores", []).append(logits.sigmoid().cpu().numpy())
    state.setdefault("true", []).append(labels.cpu().numpy())
    state.setdefault("row_ids", []).append(np.asarray(state.get("rows", [])))
    if batch.get("tune_thresholds"):
        state["tune"] = True


def eval_metrics(state: dict[str, Any], names: list[str], tuning: Tuning | None) -> dict[str, Any]:
    """Metrics at the thresholds in force; on the validation split of a training run, thresholds tuned here
    first (and written into the model's config)."""
    scores, y = np.concatenate(state["scores"]), np.concatenate(state["true"])
    if state.get("tune") and tuning is not None:
        thresholds = np.asarray(tune_thresholds(y, scores))
        tuning.remember(state["fingerprint"], thresholds.tolist())
        set_thresholds(state["model"].config, names, thresholds)
    else:
        thresholds = state["thresholds"]
    pred = scores >= thresholds
    metrics = multilabel_metrics(y, pred, names, thresholds)
    metrics["f1_micro_untuned"] = multilabel_metrics(y, scores >= DEFAULT_THRESHOLD, names)["f1_micro"]
    if "errors" in state:
        _collect_errors(state, names, thresholds)
    return {"loss": state["loss_sum"] / max(1, len(y)), **metrics}


def _collect_errors(state: dict[str, Any], names: list[str], thresholds: np.ndarray) -> None:
    """The error analysis, once the thresholds are known: F1 of each row's label set per length bucket; the worst
    rows are those wrong with the most confidence (the largest distance from a label's threshold among its
    wrong decisions)."""
    errors = state["errors"]
    errors.metric = "f1_samples"
    for rows, scores, y in zip(state["row_ids"], state["scores"], state["true"]):
        pred = scores >= thresholds
        wrong = pred != (y > 0.5)
        margin = np.where(wrong, np.abs(scores - thresholds), -1.0).max(1)
        extra = [{"predicted": [names[k] for k in np.flatnonzero(p)],
                  "scores": {names[k]: round(float(s[k]), 4) for k in np.flatnonzero(p | (t > 0.5))}}
                 for p, s, t in zip(pred, scores, y)]
        errors.add(rows, values=row_f1(y, pred), badness=np.where(wrong.any(1), margin, np.nan), extra=extra)


def predict_rows(probs: np.ndarray, names: list[str], thresholds: np.ndarray) -> list[dict[str, Any]]:
    """`labels` (the predicted set, in label order) and `scores` (every label's sigmoid score) per row."""
    out = []
    for p in probs:
        out.append({"labels": [names[k] for k in np.flatnonzero(p >= thresholds)],
                    "scores": {names[k]: float(p[k]) for k in range(len(names))}})
    return out
