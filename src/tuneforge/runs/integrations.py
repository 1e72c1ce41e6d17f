"""Checks at the start of training that fail in a second instead of after hours: the package `report_to`
names, and a Hugging Face token when the run will be pushed."""

from __future__ import annotations

import importlib.util
from typing import Any

from tuneforge.errors import ConfigError

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def check_integrations(cfg: Any) -> None:
    t = cfg.training
    package = TRACKER_PACKAGES.get(t.report_to)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"training.report_to: {t.report_to} is not installed; `pip install {package}`, "
                          "or set report_to=none")
    if t.push_to_hub:
        from tuneforge.runs.hub import require_token

        require_token()
