"""Build a RunConfig from task defaults < YAML file < `key=value` overrides, with typed checks.

>>> from tuneforge.config import load_config
>>> cfg = load_config(None, ["task=classification", "model_name_or_path=bert-base-uncased",
...                          "train_file=train.csv", "learning_rate=3e-5"])
>>> cfg.training.learning_rate, cfg.training.warmup_steps
(3e-05, 0.1)

Keys may be written nested (`training: {learning_rate: ...}`, `training.learning_rate=...`) or flat
(`learning_rate=...`): every field name is unique across sections. Unknown keys and wrong types raise
ConfigError naming the key and the nearest valid one.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from tuneforge.config.schema import SECTIONS, RunConfig, applies
from tuneforge.errors import ConfigError
from tuneforge.tasks import TaskSpec, get_spec, task_names, tasks_using

# Spellings from other tools and older transformers versions -> what to write instead.
ALIASES = {
    "warmup_ratio": "warmup_steps (a float in [0, 1) is a ratio, e.g. warmup_steps=0.1)",
    "lr": "learning_rate", "learning-rate": "learning_rate",
    "epochs": "num_train_epochs", "num_epochs": "num_train_epochs", "n_epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size", "train_batch_size": "per_device_train_batch_size",
    "eval_batch_size": "per_device_eval_batch_size",
    "evaluation_strategy": "eval_strategy", "grad_accum": "gradient_accumulation_steps",
    "fp16": "mixed_precision=fp16", "bf16": "mixed_precision=bf16", "precision": "mixed_precision",
    "model": "model_name_or_path", "model_name": "model_name_or_path", "model_id": "model_name_or_path",
    "max_seq_length": "max_length", "max_len": "max_length",
    "group_by_length": "train_sampling_strategy=group_by_length",
    "logging_dir": "output_dir (TensorBoard logs go to <output_dir>/logs)",
    "validation_split": "validation_split_percentage", "val_split": "validation_split_percentage",
    "patience": "early_stopping_patience", "clip_grad_norm": "max_grad_norm", "grad_clip": "max_grad_norm",
    "scheduler": "lr_scheduler_type", "lr_scheduler": "lr_scheduler_type", "warmup": "warmup_steps",
}

_FIELD_SECTION = {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)}
_FIELDS = {section: {f.name: f for f in fields(cls)} for section, cls in SECTIONS.items()}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _suggest(key: str, section: str | None = None) -> str:
    name = key.split(".")[-1]
    if name in ALIASES:
        return f" (did you mean {ALIASES[name]}?)"
    if section is not None and name in _FIELD_SECTION:  # a real key under the wrong section
        return f" (did you mean {_FIELD_SECTION[name]}.{name}?)"
    pool = [f.name for f in fields(SECTIONS[section])] if section in SECTIONS else list(_FIELD_SECTION)
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else " (`tuneforge config TASK` lists every key)"


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert `value` to the annotated type or raise ConfigError naming `key`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            if type(None) in args:
                return None
        options = [a for a in args if a is not type(None)]
        if int in options and float in options:  # int | float: keep ints as ints, parse strings
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
            if isinstance(value, str):
                try:
                    return int(value)
                except ValueError:
                    return _coerce(key, value, float)
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if len(options) == 1:
            return _coerce(key, value, options[0])
        for option in options:  # e.g. a number or 'auto'; a choice or a {label: weight} mapping
            try:
                return _coerce(key, value, option)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {' or '.join(_describe(o) for o in options)}, got {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, e.g. {{positive: 1.0, negative: 5.0}}, got {value!r}")
        return {str(k): _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if origin is list:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(x, (str, int, float)) for x in items):
            raise ConfigError(f"{key}: expected a list of strings, e.g. ['###'], got {value!r}")
        return [str(x) for x in items]
    if origin is Literal:
        if value is False and "no" in args:  # YAML 1.1 reads a bare `no` as false
            value = "no"
        if value in args:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint_text = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: invalid value {value!r}{hint_text}; valid: {', '.join(map(str, args))}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config annotation {hint!r} for {key}")  # a bug in the schema


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is dict:
        return "a mapping {label: weight}"
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false"}.get(hint, str(hint))


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. learning_rate=3e-5")
    key, _, raw = item.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if p.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"config: {str(p)!r} is not a YAML file (.yaml/.yml); data files go in the config, "
                          f"e.g. `tuneforge train train_file={p} model_name_or_path=... task=classification`")
    if not p.is_file():
        raise ConfigError(f"config file not found: {str(p)!r}; "
                          "write one with `tuneforge config classification > run.yaml`")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{p}:{where}: invalid YAML: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping of keys to values at the top level, "
                          f"got {type(loaded).__name__}")
    return loaded


parse_override = _parse_override  # `tuneforge tune` reads overrides the same way
read_config_file = _read_yaml  # and config files


def _flatten(raw: dict[str, Any], origin: str) -> dict[str, tuple[str, Any]]:
    """Map every entry to its canonical `section.key`; values keep where they came from for messages."""
    out: dict[str, tuple[str, Any]] = {}
    for key, value in raw.items():
        key = str(key)
        if key == "task":
            out["task"] = (origin, value)
        elif key == "search":
            raise ConfigError(f"{origin}: search: the search section is read by `tuneforge tune`; `tuneforge train` "
                              "trains one config (remove the section, or train a study's best.yaml)")
        elif key in SECTIONS and value is None:  # `training:` with every key commented out
            continue
        elif key in SECTIONS and not isinstance(value, dict):
            raise ConfigError(f"{origin}: {key}: expected a mapping of keys to values (e.g. "
                              f"`{key}: {{{fields(SECTIONS[key])[0].name}: ...}}`), got {value!r}")
        elif key in SECTIONS:
            for sub, sub_value in value.items():
                sub = str(sub)
                if _FIELD_SECTION.get(sub) != key:
                    raise ConfigError(f"{origin}: unknown key {key}.{sub}{_suggest(sub, key)}")
                out[f"{key}.{sub}"] = (origin, sub_value)
        elif "." in key:
            section, _, sub = key.partition(".")
            if section not in SECTIONS:
                raise ConfigError(f"{origin}: unknown section {section!r} in {key!r}; "
                                  f"valid: {', '.join(SECTIONS)}")
            if _FIELD_SECTION.get(sub) != section:
                raise ConfigError(f"{origin}: unknown key {key}{_suggest(sub, section)}")
            out[key] = (origin, value)
        elif key in _FIELD_SECTION:
            out[f"{_FIELD_SECTION[key]}.{key}"] = (origin, value)
        else:
            raise ConfigError(f"{origin}: unknown key {key!r}{_suggest(key)}")
    return out


def load_config(path: str | os.PathLike | dict[str, Any] | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> RunConfig:
    """Resolve task defaults < YAML (a path or an already-parsed dict) < overrides into a RunConfig."""
    raw = path if isinstance(path, dict) else (_read_yaml(path) if path is not None else {})
    entries = _flatten(raw, str(path) if path is not None and not isinstance(path, dict) else "config")
    over = overrides if isinstance(overrides, dict) else dict(_parse_override(i) for i in overrides or [])
    entries.update(_flatten(over, "override"))

    task = entries.pop("task", (None, None))[1]
    if task is None:
        raise ConfigError(f"task: missing; add `task: classification` to the config "
                          f"(valid: {', '.join(task_names())})")
    spec = get_spec(str(task))
    merged: dict[str, dict[str, Any]] = {name: dict(spec.defaults.get(name, {})) for name in SECTIONS}
    for dotted, (origin, value) in entries.items():
        section, _, key = dotted.partition(".")
        f = _FIELDS[section][key]
        if not applies(f, spec.name, section):
            only = tasks_using(section, key)
            raise ConfigError(f"{origin}: {dotted} is only for task {' / '.join(only)}, and this run's task is "
                              f"{spec.name}; remove it (`tuneforge config {spec.name}` lists the keys that apply)")
        task_default = spec.defaults.get(section, {})
        is_null = value is None or (isinstance(value, str) and value.lower() in ("null", "none"))
        if is_null and key in task_default:  # null on a task-default key: the task fills it in
            value = task_default[key]
        merged[section][key] = value

    lora_on = str(merged["lora"].get("enabled", False)).lower() in _TRUE
    if lora_on and "training.learning_rate" not in entries:
        # the task's default rate is for full fine-tuning: a LoRA run's stays null, engine/lora.py resolves it
        merged["training"].pop("learning_rate", None)
    built = {}
    for name, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        values = {k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in merged[name].items()}
        built[name] = cls(**values)
    config = RunConfig(task=spec.name, **built)
    _check_cross_fields(config, spec)
    return config


def _check_cross_fields(config: RunConfig, spec: TaskSpec) -> None:
    if not config.model.model_name_or_path:
        raise ConfigError("model.model_name_or_path: missing; give a hub id (e.g. bert-base-uncased) "
                          "or a local model folder")
    if config.lora.enabled and config.freeze.enabled:
        raise ConfigError("freeze: LoRA already freezes the whole base model and trains adapters (plus new heads); "
                          "remove the freeze.* settings or set lora.enabled=false")
    data = config.data
    if not data.train_file and not data.dataset_name:
        raise ConfigError("data.train_file: missing; give a training file (csv/tsv/json/jsonl/parquet) "
                          "or data.dataset_name for a hub dataset")
    metric = config.training.metric_for_best_model
    metrics = spec.metrics
    needs_generation = metric and metric.removeprefix("eval_") in spec.generated_metrics
    if needs_generation and not config.generation.predict_with_generate:
        raise ConfigError(f"training.metric_for_best_model: {metric} needs generation during evaluation; "
                          "set generation.predict_with_generate=true or choose loss")
    if metric is not None:
        name = metric.removeprefix("eval_")
        if metrics and name not in metrics:
            close = difflib.get_close_matches(name, metrics, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"training.metric_for_best_model: unknown metric {metric!r}{hint}; "
                              f"valid for {config.task}: {', '.join(metrics)}")


def render_config(task: str) -> str:
    """A complete YAML config for `task`, every key commented with its help and filled with its default."""
    spec = get_spec(task)
    lines = [f"# tuneforge config for task {spec.name!r}: {spec.summary}",
             "# Run: tuneforge train THIS.yaml [key=value ...]   (overrides win over this file)", "",
             f"task: {spec.name}"]
    for name, cls in SECTIONS.items():
        shown = [f for f in fields(cls) if applies(f, spec.name, name)]
        if not shown:
            continue
        lines += ["", f"{name}:"]
        task_defaults = spec.defaults.get(name, {})
        for f in shown:
            default = task_defaults.get(f.name, f.default if f.default is not MISSING else None)
            help_text = f.metadata.get("help", "")
            if f.name in spec.notes:
                help_text = help_text.replace(" Task default.", "") + f" ({spec.notes[f.name]})"
            elif f.name in task_defaults:
                help_text = help_text.replace(" Task default.", "") + f" ({spec.name} default)"
            lines.append(f"  # {help_text}")
            dumped = yaml.safe_dump({f.name: default}, default_flow_style=True, width=1000).strip()
            lines.append(f"  {dumped[1:-1]}")
    lines += ["", "# The search space of `tuneforge tune` (docs/tune.md); `tuneforge train` refuses a config with one.",
              "# Any training, lora or freeze key: log(LOW, HIGH), float(LOW, HIGH[, step=S]),",
              "# int(LOW, HIGH[, step=S][, log]) or choice(A, B, ...).",
              "# search:", "#   learning_rate: log(1e-5, 3e-4)", "#   warmup_steps: float(0.0, 0.2)",
              "#   per_device_train_batch_size: choice(16, 32)"]
    return "\n".join(lines) + "\n"
