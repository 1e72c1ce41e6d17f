"""The classification task's three problem types and the settings each accepts (no torch).

>>> from tuneforge.data.labels import REGRESSION
>>> DEFAULT_METRIC[REGRESSION]
'rmse'

`check_problem_keys` runs as soon as `prepare_data` has found the problem type, before any model loads, so a
setting that has no meaning for it stops the run with one line: a metric_for_best_model the problem type does not
report, label smoothing outside single-label, a label-weight mapping for regression.
"""

from __future__ import annotations

from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.data.labels import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from tuneforge.data.prepared import PreparedData
from tuneforge.errors import ConfigError

# metric_for_best_model: the names valid for each problem type (all are in the spec's `metrics`) and the default
PROBLEM_METRICS = {
    SINGLE_LABEL: ("loss", "accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro",
                   "precision_weighted", "recall_weighted"),
    MULTI_LABEL: ("loss", "f1_micro", "f1_macro", "f1_samples", "precision_micro", "recall_micro", "precision_macro",
                  "recall_macro", "subset_accuracy"),
    REGRESSION: ("loss", "mse", "rmse", "mae", "pearson", "spearman", "r2"),
}
DEFAULT_METRIC = {SINGLE_LABEL: "f1_macro", MULTI_LABEL: "f1_micro", REGRESSION: "rmse"}


def problem_type_of(config: RunConfig, data: PreparedData | None = None) -> str:
    """The run's problem type: found in the data (before `resolve` writes it into the config), else the config's
    (a finished run's), else single-label (runs from before problem types)."""
    return (data.info.get("problem_type") if data is not None else None) or config.data.problem_type or SINGLE_LABEL


def model_problem_type(model_config: Any) -> str:
    return getattr(model_config, "problem_type", None) or SINGLE_LABEL


def check_problem_keys(config: RunConfig, problem: str) -> None:
    """Each training setting that depends on the problem type means something for `problem`."""
    t = config.training
    if t.label_smoothing_factor and problem != SINGLE_LABEL:
        raise ConfigError(f"training.label_smoothing_factor: applies to single-label classification, not {problem}; "
                          "remove it")
    if isinstance(t.class_weights, dict) and problem == REGRESSION:
        raise ConfigError("training.class_weights: label weights do not apply to regression; remove the mapping "
                          "(auto and none are ignored)")
    metric = t.metric_for_best_model
    if metric is not None and metric.removeprefix("eval_") not in PROBLEM_METRICS[problem]:
        raise ConfigError(f"training.metric_for_best_model: {metric} does not apply to {problem}; valid for "
                          f"{problem}: {', '.join(PROBLEM_METRICS[problem])}")
