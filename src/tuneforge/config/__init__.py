"""Run configuration: typed dataclasses (schema) and the YAML/override loader.

>>> from tuneforge.config import render_config
>>> "warmup_steps: 0.1" in render_config("classification")
True
"""

from tuneforge.config.loader import load_config, render_config
from tuneforge.config.schema import DataConfig, ModelConfig, RunConfig, TrainingConfig

__all__ = ["DataConfig", "ModelConfig", "RunConfig", "TrainingConfig", "load_config", "render_config"]
