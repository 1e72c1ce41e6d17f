"""Task protocol and registry: a task contributes data preparation, model loading, collation, loss,
metrics and prediction; the engine owns the loop.

>>> from tuneforge.tasks import get_spec
>>> get_spec("classification").defaults["training"]["learning_rate"]
2e-05

Specs are light (no torch import) so configs and data are checked in well under a second; the task object
itself, which needs torch, is imported only by `get_task`.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tuneforge.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from tuneforge.config.schema import RunConfig
    from tuneforge.data.prepared import PreparedData, TokenizedSplit


@dataclass(frozen=True)
class TaskSpec:
    name: str
    summary: str
    factory: str  # "module:attribute" of the Task class, imported lazily
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)  # section -> key -> value
    metrics: tuple[str, ...] = ()  # names valid for metric_for_best_model (without the eval_ prefix)
    notes: dict[str, str] = field(default_factory=dict)  # key -> how the task fills a default left null


class Task(Protocol):
    """What the engine needs from a task. Batches are dicts of tensors; the engine never looks inside."""

    spec: TaskSpec

    def text_columns(self, config: RunConfig) -> list[str]:
        """The input columns (used for cleaning, dedupe and overlap checks)."""

    def prepare_data(self, config: RunConfig) -> PreparedData:
        """Read, validate and split the data (no torch, no model): raises DataError on bad input."""

    def load(self, config: RunConfig, data: PreparedData) -> tuple[Any, Any, str | None]:
        """Return (model, tokenizer, hub commit hash or None) ready for training."""

    def max_length(self, config: RunConfig, tokenizer: Any, model_config: Any) -> int:
        """The truncation length: the configured one, capped by what the model accepts."""

    def tokenize(self, tokenizer: Any, data: PreparedData, config: RunConfig, max_length: int
                 ) -> dict[str, TokenizedSplit]:
        """Tokenize every split once into arrays (cached); fill the data report's length statistics."""

    def collate(self, split: TokenizedSplit, indices: Any, pad_id: int,
                pad_to_multiple_of: int | None = None) -> dict[str, Any]:
        """Build one padded batch of tensors from array rows, without per-token Python work."""

    def num_items(self, batch: dict[str, Any]) -> int:
        """Items the loss sums over in this batch (examples, or target tokens)."""

    def loss(self, model: Any, batch: dict[str, Any]) -> torch.Tensor:
        """Sum of per-item losses; the engine divides by the items of the whole accumulation window."""

    def eval_step(self, model: Any, batch: dict[str, Any], state: dict[str, Any]) -> None:
        """Fold one batch into a streaming metric state (loss sums, predictions), never keeping logits."""

    def eval_metrics(self, state: dict[str, Any], data: PreparedData) -> dict[str, Any]:
        """Turn the streaming state into metrics; scalar ones are logged, others saved."""

    def predict(self, model: Any, tokenizer: Any, texts: list[str], pairs: list[str] | None = None,
                batch_size: int = 64, max_length: int | None = None) -> list[dict[str, Any]]:
        """Inference on raw texts, the same path for the CLI, the Python API and (later) the server."""


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"task {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> TaskSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, task_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"task: unknown task {name!r}{hint}; valid: {', '.join(task_names())}") from None


def get_task(name: str) -> Task:
    spec = get_spec(name)
    module_name, attr = spec.factory.split(":")
    return getattr(importlib.import_module(module_name), attr)(spec)
