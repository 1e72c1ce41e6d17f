"""tuneforge: fine-tune pretrained transformers with one fast, well-tested engine.

>>> import tuneforge
>>> cfg = tuneforge.load_config("run.yaml", ["learning_rate=3e-5"])   # doctest: +SKIP
>>> run = tuneforge.train(cfg)                                          # doctest: +SKIP
>>> tuneforge.load(run.path).predict(["great product"])                 # doctest: +SKIP
>>> tuneforge.load("runs/<id>/export/onnx-int8").predict(["great"])     # doctest: +SKIP

Importing tuneforge is light: torch loads only when training or inference starts.
"""

from typing import Any

from tuneforge.config import RunConfig, load_config, render_config
from tuneforge.errors import ConfigError, DataError, UserError
from tuneforge.version import __version__


def train(config: Any = None, overrides: Any = None, console: Any = None) -> Any:
    from tuneforge.runs.train import train as _train

    return _train(config, overrides, console)


def load(ref: Any, device: str | None = None) -> Any:
    """A finished run (folder or id) or an export folder, ready for predict / summarize / generate."""
    from tuneforge.inference import load as _load

    return _load(ref, device)


def evaluate(ref: Any, data_file: str | None = None, name: str | None = None, split: str | None = None) -> dict:
    from tuneforge.inference import evaluate_run

    return evaluate_run(ref, data_file, name, split)


__all__ = ["ConfigError", "DataError", "RunConfig", "UserError", "evaluate", "load", "load_config",
           "render_config", "train", "__version__"]
