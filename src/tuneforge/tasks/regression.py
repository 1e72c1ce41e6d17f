"""Regression pieces of the classification task (data.problem_type regression): MSE on a standardised target,
the scale folded into the saved head, metrics and predictions in the target's own units.

>>> import torch
>>> from tuneforge.tasks.regression import fold_scale
>>> head = torch.nn.Linear(3, 1)
>>> fold_scale(head, mean=100.0, std=20.0)
100.0
>>> x = torch.ones(1, 3)
>>> folded = torch.nn.Linear(3, 1)
>>> _ = folded.load_state_dict(head.state_dict())  # `folded` has no hooks: it gets target units
>>> bool(torch.allclose(folded(x), head(x) * 20.0 + 100.0))
True

Training sees (y - mean) / std, with mean and std of the training split, so the head learns numbers near 0 and 1
whatever the target's units. The model in memory stays in those standardised units; its final linear layer's
state dict is written folded (weight * std, bias * std + mean: a state_dict hook, so every save holds target
units: checkpoints, the final weights, LoRA adapters and merged weights, pushes) and unfolded again when a
state dict is loaded back into it (resume, the best checkpoint). A model loaded from disk by anything else
(plain transformers `from_pretrained`, ONNX Runtime, `tuneforge.load`) therefore returns values in the target's
units without knowing about the scale. A head without a bias (GPT-2's `score`) cannot add the mean: its target is
only divided by std (mean 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SCALE_KEY = "regression_target"  # config.json: {"column", "mean", "std"} of the training target (information)


def head_linear(model: Any) -> Any:
    """The final linear layer of a one-output sequence-classification model (BERT's `classifier`, RoBERTa's
    `classifier.out_proj`, GPT-2's `score`): the last nn.Linear with one output outside the base model."""
    import torch

    base = getattr(model, "base_model_prefix", "")
    found = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1
             and not (base and (name == base or name.startswith(base + ".")))]
    if not found:
        raise AssertionError(f"no one-output linear head found in {type(model).__name__}")  # a model bug
    return found[-1]


def fold_scale(linear: Any, mean: float, std: float) -> float:
    """Make every state dict of `linear` hold target units and every load take them back to standardised ones;
    returns the mean actually folded (0 without a bias)."""
    mean = mean if linear.bias is not None else 0.0

    def folded(module: Any, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        state[prefix + "weight"] = state[prefix + "weight"] * std
        if prefix + "bias" in state:
            state[prefix + "bias"] = state[prefix + "bias"] * std + mean

    def unfolded(module: Any, state: dict[str, Any], prefix: str, *args: Any) -> None:
        if prefix + "weight" in state:
            state[prefix + "weight"] = state[prefix + "weight"] / std
        if prefix + "bias" in state:
            state[prefix + "bias"] = (state[prefix + "bias"] - mean) / std

    linear.register_state_dict_post_hook(folded)
    linear.register_load_state_dict_pre_hook(unfolded)
    return mean


def loss(logits: Any, labels: Any, scale: tuple[float, float]) -> Any:
    """Sum of squared errors on the standardised target (MSE once the engine divides by the rows)."""
    mean, std = scale
    return ((logits.squeeze(-1) - (labels.to(logits.dtype) - mean) / std) ** 2).sum()


def eval_step(logits: Any, batch: dict[str, Any], state: dict[str, Any], scale: tuple[float, float] | None,
              std: float) -> None:
    """Predictions in target units (`scale`: the in-memory training model is standardised; None: a model
    loaded from disk already answers in target units); the loss is the MSE in standardised units (`std`), the
    value training minimises, comparable between runs on the same data."""
    z = logits.squeeze(-1).double().cpu().numpy()
    pred = z * scale[1] + scale[0] if scale else z
    true = batch["labels"].double().cpu().numpy()
    state["loss_sum"] = state.get("loss_sum", 0.0) + float((((pred - true) / std) ** 2).sum())
    state.setdefault("pred", []).append(pred)
    state.setdefault("true", []).append(true)
    if "errors" in state:  # error analysis: mean absolute error per length bucket, the largest errors
        errors = state["errors"]
        errors.metric, errors.worst_key = "absolute_error", "largest_errors"
        error = np.abs(pred - true)
        errors.add(state["rows"], values=error, badness=error,
                   extra=[{"predicted": round(float(p), 6), "absolute_error": round(float(e), 6)}
                          for p, e in zip(pred, error)])


def eval_metrics(state: dict[str, Any]) -> dict[str, Any]:
    from tuneforge.evaluate.classification import regression_metrics

    true, pred = np.concatenate(state["true"]), np.concatenate(state["pred"])
    return {"loss": state["loss_sum"] / max(1, len(true)), **regression_metrics(true, pred)}


def predict_rows(logits: Any) -> list[dict[str, Any]]:
    """`score`: the predicted value, as transformers' text-classification pipeline names a regression output."""
    return [{"score": float(v)} for v in logits.squeeze(-1).double().cpu().tolist()]
