"""Train a packaged demo recipe (src/tuneforge/recipes/) on the demo's own generated files and model."""

from __future__ import annotations

import os
from importlib import resources
from typing import Any


def train_recipe(recipe: str, model: Any, files: dict[str, Any], output_dir: str | os.PathLike | None,
                 extra: list[str]) -> Any:
    """Train a packaged demo recipe on the demo's own files (train/validation[/test]) and model."""
    from tuneforge.runs.train import train

    overrides = [f"model_name_or_path={model}"] + [f"{split}_file={path}" for split, path in files.items()]
    if output_dir:
        overrides.append(f"output_dir={output_dir}")
    return train(str(resources.files("tuneforge") / "recipes" / recipe), overrides + extra)
