"""Task protocol and registry: a task contributes data preparation, model loading, collation, loss,
metrics and prediction; the engine owns the loop.

>>> from tuneforge.tasks import get_spec
>>> get_spec("classification").defaults["training"]["warmup_steps"]
0.1

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
    from tuneforge.data.table import DataReport, Table
    from tuneforge.deploy.schemas import ServeContext, ServeRoute


@dataclass(frozen=True)
class Verb:
    """A task's own name for inference beside the generic `predict`: the LoadedModel method of that name
    (`tuneforge.load(RUN).summarize(...)`) and, when `help` is set, the CLI command `tuneforge NAME RUN`."""

    name: str
    help: str = ""  # the CLI command's help; empty: a Python method only (the CLI's `predict` covers the task)
    input: str = "text"  # the CLI command's input flag: --text or --prompt
    batch_size: int = 32  # the CLI command's default --batch-size


@dataclass(frozen=True)
class TaskSpec:
    """Everything about a task that code outside `tasks/` needs, declared once (no torch: read before any
    model loads). Code elsewhere reads these fields instead of comparing task names."""

    name: str
    summary: str
    factory: str  # "module:attribute" of the Task class, imported lazily
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)  # section -> key -> value
    metrics: tuple[str, ...] = ()  # names valid for metric_for_best_model (without the eval_ prefix)
    notes: dict[str, str] = field(default_factory=dict)  # key -> how the task fills a default left null
    # section -> the task-specific config keys this task uses. A key that some task declares applies only to the
    # tasks declaring it (others reject it and `tuneforge config` leaves it out); a key no task declares applies
    # to every task. The schema itself names no task.
    config_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    lower_is_better: tuple[str, ...] = ("loss",)  # metrics where smaller is better; every other one: greater
    generated_metrics: tuple[str, ...] = ()  # metrics scored on generated text (need predict_with_generate)
    baseline: str | None = None  # "module:function": fn(data, table, cfg) -> {baseline name: metrics}
    # the model before fine-tuning is a baseline (scored by the engine at step 0) when it is pretrained as a
    # whole: never for a new head, skipped when the checkpoint adds weights (a bert2bert's cross-attention)
    base_model_baseline: bool = False
    lora_task_type: str = ""  # peft TaskType of the adapted model (SEQ_CLS, SEQ_2_SEQ_LM, CAUSAL_LM)
    pipeline_tag: str = ""  # Hugging Face pipeline tag (model card metadata and its usage example)
    card_metrics: tuple[str, ...] = ()  # model-card metadata `metrics` (Hugging Face metric names)
    card_example: str = "an example text"  # the input in the model card's usage example
    card_use: str = ""  # the model card's intended use; may name {n_labels}, {labels}, {pair} and {prefix}
    predicts_labels: bool = False  # predicts one of the model's labels (config.id2label): LoadedModel.labels
    verb: Verb | None = None  # its own inference verb (LoadedModel method, maybe a CLI command)
    analysis_metric: str = ""  # error analysis: the per-example metric shown per input-length bucket
    analysis_worst: str = ""  # error analysis: the error_analysis.json key of the worst examples
    generates: bool = False  # outputs generated text: max_new_tokens and generation settings apply
    prompt_shares_context: bool = False  # prompt and generated tokens share one context window (decoder-only)
    verify_measure: str = ""  # export verification: the agreement measure's name in report.json
    verify_metrics: str = ""  # export verification: which metric change it reports, a kind in deploy/verify.py
    onnx_class: str = ""  # "module:Class" of the ONNX Runtime stand-in, which also writes the ONNX graph(s)
    compile_auto: bool = False  # torch_compile=auto compiles this task's long GPU runs (measured to pay)
    vocab_logits: bool = False  # the head outputs vocabulary logits per token (the memory estimate counts them)
    windows: bool = False  # long inputs are split into overlapping windows (data.stride), never truncated
    # validation metrics of the kept model that it carries as attributes of its config.json (tuned on validation,
    # used by predict, the server and exports: QA's null_score_diff_threshold); set by the engine after fit
    config_metrics: tuple[str, ...] = ()
    # the data keys naming the columns inference reads: the text, then its pair (QA: question_column,
    # context_column); empty: text_column, and text_pair_column when the run has one
    input_keys: tuple[str, ...] = ()
    card_usage: str = ""  # the model card's usage code when no transformers pipeline fits; may name {name}

    def __post_init__(self) -> None:
        for group in ("lower_is_better", "generated_metrics"):
            unknown = set(getattr(self, group)) - set(self.metrics)
            if self.metrics and unknown:
                raise ValueError(f"task {self.name!r}: {group} names metrics it does not declare: {sorted(unknown)}")

    def greater_is_better(self, metric: str) -> bool:
        """The direction of `metric` (with or without the eval_ prefix), as the task declares it."""
        return metric.removeprefix("eval_") not in self.lower_is_better


class Task(Protocol):
    """What the engine, inference and deploy code call on a task: every such method, one signature each (no
    probing with hasattr). Batches are dicts of tensors; the engine never looks inside. `TaskBase` gives the
    neutral answer of the optional steps (`resolve`, `fp16_safe`, `init_eval_state`)."""

    spec: TaskSpec

    # ---- data (no torch) -------------------------------------------------------------------------------
    def text_columns(self, config: RunConfig) -> list[str]:
        """The input columns (used for cleaning, dedupe and overlap checks)."""

    def prepare_data(self, config: RunConfig) -> PreparedData:
        """Read, validate and split the data (no torch, no model): raises DataError on bad input."""

    def read_eval_file(self, config: RunConfig, model_config: Any) -> tuple[Table, DataReport, list[str]]:
        """Read config.data.train_file as evaluation data for a trained model (`tuneforge evaluate`): the table
        (named "eval"), its data report (split "eval") and the label names (empty for generative tasks)."""

    # ---- model ---------------------------------------------------------------------------------------
    def auto_class(self) -> Any:
        """The transformers Auto class that loads a trained model of this task (AutoModelFor...)."""

    def load(self, config: RunConfig, data: PreparedData) -> tuple[Any, Any, str | None]:
        """Return (model, tokenizer, hub commit hash or None) ready for training."""

    def resolve(self, config: RunConfig, model: Any, tokenizer: Any, data: PreparedData
                ) -> tuple[RunConfig, list[str]]:
        """Fill the defaults that depend on the loaded model, its tokenizer or the data (never in place): the
        new config, which trains and is written to run_config.yaml, and notes to print."""

    def best_metric(self, config: RunConfig, data: PreparedData) -> str:
        """The metric that selects the best model (without the eval_ prefix): metric_for_best_model, else the
        task's default for this data (known before any model loads: `tuneforge tune` sets its direction)."""

    def fp16_safe(self, model_config: Any) -> bool:
        """Whether the automatic precision may choose fp16 for this model (False: it overflows, e.g. T5)."""

    def max_length(self, config: RunConfig, tokenizer: Any, model_config: Any) -> int:
        """The truncation length: the configured one, capped by what the model accepts."""

    def tokenize(self, tokenizer: Any, data: PreparedData, config: RunConfig, max_length: int
                 ) -> dict[str, TokenizedSplit]:
        """Tokenize every split once into arrays (cached); fill the data report's length statistics."""

    # ---- batches, loss, metrics (torch) ----------------------------------------------------------------
    def collate(self, split: TokenizedSplit, indices: Any, pad_id: int,
                pad_to_multiple_of: int | None = None) -> dict[str, Any]:
        """Build one padded batch of tensors from array rows, without per-token Python work."""

    def num_items(self, batch: dict[str, Any]) -> float:
        """Items the loss sums over in this batch (examples, target tokens, or summed class weights)."""

    def logits(self, model: Any, batch: dict[str, Any]) -> torch.Tensor:
        """The model's logits for `batch`, aligned with `targets(batch)`: (batch, classes) or (batch, length,
        vocabulary). Export verification compares these between a model and its export."""

    def targets(self, batch: dict[str, Any]) -> torch.Tensor:
        """What each row (or position) of `logits` is scored against; -100 where nothing is scored."""

    def loss(self, model: Any, batch: dict[str, Any]) -> torch.Tensor:
        """Sum of per-item losses; the engine divides by the items of the whole accumulation window."""

    def init_eval_state(self, model: Any, tokenizer: Any, config: RunConfig) -> dict[str, Any]:
        """A fresh streaming metric state for one evaluation pass (e.g. a generator and ROUGE totals)."""

    def eval_step(self, model: Any, batch: dict[str, Any], state: dict[str, Any]) -> None:
        """Fold one batch into a streaming metric state (loss sums, predictions), never keeping logits."""

    def eval_metrics(self, state: dict[str, Any], data: PreparedData) -> dict[str, Any]:
        """Turn the streaming state into metrics; scalar ones are logged, others saved."""

    def error_row(self, config: RunConfig, split: TokenizedSplit, table: Table | None, tokenizer: Any,
                  row: int) -> dict[str, Any]:
        """How error_analysis.json shows row `row` of an evaluated split (`table`: its cleaned rows): the texts
        (cut with evaluate.errors.quote), the reference and where the row is in the data file."""

    # ---- inference ---------------------------------------------------------------------------------
    def predict(self, model: Any, tokenizer: Any, texts: list[str], config: RunConfig, *,
                pairs: list[str] | None = None, batch_size: int = 32, max_length: int | None = None,
                max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        """Inference on raw texts, the one path of the CLI, the Python API and the server. `max_length` caps
        the input tokens, `max_new_tokens` the generated ones (ignored by tasks that do not generate); the
        default batch size is the task's own."""

    def serve_schema(self, config: RunConfig, ctx: ServeContext) -> ServeRoute:
        """The server's POST route for this run: path, request and response models (built with the helpers of
        deploy/schemas.py from the server's limits in `ctx`), and how the server feeds the model."""


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"task {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def all_specs() -> list[TaskSpec]:
    """Every registered spec, in registration order."""
    return list(_REGISTRY.values())


def spec_with_verb(verb: str) -> TaskSpec | None:
    """The task whose own inference verb is `verb` (e.g. summarize), or None."""
    return next((s for s in _REGISTRY.values() if s.verb is not None and s.verb.name == verb), None)


def tasks_using(section: str, key: str) -> list[str]:
    """The tasks that declare `section.key` in their config_keys, in registration order (empty: the key is
    not task-specific and applies to every task)."""
    return [name for name, spec in _REGISTRY.items() if key in spec.config_keys.get(section, ())]


def key_applies(task: str, section: str, key: str) -> bool:
    """Whether config key `section.key` means something for `task` (others are rejected and not printed)."""
    users = tasks_using(section, key)
    return not users or task in users


def load_declared(ref: str) -> Any:
    """The object a spec names as "module:attribute" (its factory, baseline or ONNX class), imported now."""
    module_name, attr = ref.split(":")
    return getattr(importlib.import_module(module_name), attr)


def get_spec(name: str) -> TaskSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, task_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"task: unknown task {name!r}{hint}; valid: {', '.join(task_names())}") from None


def get_task(name: str) -> Task:
    spec = get_spec(name)
    return load_declared(spec.factory)(spec)


class TaskBase:
    """The neutral answers of the optional steps; task classes derive from it and override what they need."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    def resolve(self, config: RunConfig, model: Any, tokenizer: Any, data: PreparedData
                ) -> tuple[RunConfig, list[str]]:
        return config, []  # nothing depends on the model

    def best_metric(self, config: RunConfig, data: PreparedData) -> str:
        return (config.training.metric_for_best_model or "loss").removeprefix("eval_")

    def fp16_safe(self, model_config: Any) -> bool:
        return True

    def init_eval_state(self, model: Any, tokenizer: Any, config: RunConfig) -> dict[str, Any]:
        return {}
