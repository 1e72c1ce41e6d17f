"""The search space of `tuneforge tune`: the config's `search` section (or `key=EXPR` overrides) in a short
syntax, mapped to Optuna's distributions and checked against the config schema before anything runs.

>>> from tuneforge.tune.space import parse_expression
>>> parse_expression("training.learning_rate", "log(1e-5, 1e-3)")
FloatDistribution(high=0.001, log=True, low=1e-05, step=None)
>>> parse_expression("training.per_device_train_batch_size", "choice(8, 16, 32)")
CategoricalDistribution(choices=(8, 16, 32))
>>> parse_expression("lora.r", "int(4, 32, step=4)")
IntDistribution(high=32, log=False, low=4, step=4)

    log(LOW, HIGH)                  a float, sampled on a log scale
    float(LOW, HIGH[, step=S])      a float, uniform (on a grid of S when given)
    int(LOW, HIGH[, step=S][, log]) an integer (HIGH included)
    choice(A, B, ...)               one of the values (numbers, strings, true/false)
"""

from __future__ import annotations

import difflib
import re
from dataclasses import fields
from typing import Any

import yaml

from tuneforge.errors import ConfigError

SEARCHABLE_SECTIONS = ("training", "lora", "freeze")  # what a trial may change (the data and model stay)
EXPRESSION = re.compile(r"^\s*(log|float|int|choice)\s*\((.*)\)\s*$", re.DOTALL)
SYNTAX = "log(LOW, HIGH), float(LOW, HIGH[, step=S]), int(LOW, HIGH[, step=S][, log]) or choice(A, B, ...)"
NOT_SEARCHABLE = {"output_dir", "resume_from_checkpoint", "seed", "metric_for_best_model", "greater_is_better",
                  "report_to", "push_to_hub", "hub_model_id", "eval_strategy", "eval_steps", "load_best_model_at_end"}


def is_expression(value: Any) -> bool:
    """Whether an override's value is a search expression rather than a plain value."""
    return isinstance(value, str) and EXPRESSION.match(value) is not None


def _field_sections() -> dict[str, str]:
    from tuneforge.config.schema import SECTIONS

    return {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)}


def canonical_key(key: str) -> str:
    """`learning_rate` or `training.learning_rate` -> `training.learning_rate`; a key a trial cannot change is a
    ConfigError naming it."""
    owner = _field_sections()
    section, _, name = key.rpartition(".")
    if not section:
        section = owner.get(name, "")
    if owner.get(name) != section:
        close = difflib.get_close_matches(name, list(owner), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"search.{key}: unknown config key{hint}; `tuneforge config TASK` lists every key")
    if section not in SEARCHABLE_SECTIONS or name in NOT_SEARCHABLE:
        raise ConfigError(f"search.{key}: {section}.{name} cannot be searched (a trial may change "
                          f"{', '.join(SEARCHABLE_SECTIONS)} keys except {', '.join(sorted(NOT_SEARCHABLE))})")
    return f"{section}.{name}"


def _value(text: str) -> Any:
    """A number (YAML 1.1 would read 1e-5 as a string), else what YAML makes of it (true, a string, ...)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def _args(key: str, text: str, body: str) -> tuple[list[Any], dict[str, Any]]:
    positional, named = [], {}
    for part in (p.strip() for p in body.split(",")):
        if not part:
            raise ConfigError(f"search.{key}: {text!r} has an empty argument; write {SYNTAX}")
        name, eq, value = part.partition("=")
        if eq:
            named[name.strip()] = _value(value.strip())
        elif part == "log":
            named["log"] = True
        else:
            positional.append(_value(part))
    return positional, named


def parse_expression(key: str, text: str) -> Any:
    """The Optuna distribution of one search expression; a malformed one is a ConfigError naming the key."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    match = EXPRESSION.match(str(text))
    if match is None:
        raise ConfigError(f"search.{key}: {text!r} is not a search expression; write {SYNTAX}")
    kind, body = match.groups()
    try:
        positional, named = _args(key, text, body)
    except yaml.YAMLError:
        raise ConfigError(f"search.{key}: {text!r}: an argument is not a value; write {SYNTAX}") from None
    if kind == "choice":
        if named or len(positional) < 2 or len(set(map(repr, positional))) != len(positional):
            raise ConfigError(f"search.{key}: {text!r}: choice needs two or more different values, e.g. "
                              "choice(8, 16, 32)")
        return CategoricalDistribution(positional)
    allowed = {"log": {"log"}, "float": {"step"}, "int": {"step", "log"}}[kind]
    unknown = set(named) - allowed
    if len(positional) != 2 or unknown:
        extra = f" ({', '.join(sorted(unknown))} is not an option of {kind})" if unknown else ""
        raise ConfigError(f"search.{key}: {text!r}: {kind} takes LOW and HIGH{extra}; write {SYNTAX}")
    low, high = positional
    numbers = (int,) if kind == "int" else (int, float)
    if not all(isinstance(v, numbers) and not isinstance(v, bool) for v in (low, high)):
        what = "integers" if kind == "int" else "numbers"
        raise ConfigError(f"search.{key}: {text!r}: LOW and HIGH must be {what}")
    if low >= high:
        raise ConfigError(f"search.{key}: {text!r}: LOW must be below HIGH")
    step = named.get("step")
    if kind == "log" and low <= 0:
        raise ConfigError(f"search.{key}: {text!r}: a log range needs LOW > 0")
    try:
        if kind == "int":
            if named.get("log") and low < 1:
                raise ConfigError(f"search.{key}: {text!r}: an int log range needs LOW >= 1")
            return IntDistribution(low, high, log=bool(named.get("log")), step=int(step) if step else 1)
        return FloatDistribution(float(low), float(high), log=kind == "log",
                                 step=float(step) if step is not None else None)
    except ValueError as err:  # Optuna's own checks (a step that does not divide the range, ...)
        raise ConfigError(f"search.{key}: {text!r}: {err}") from None


def edge_values(distribution: Any) -> list[Any]:
    """The values a config must accept for the space to be valid: both ends of a range (and a value between them
    for a continuous one), every choice."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    values = [distribution.low, distribution.high]
    if isinstance(distribution, FloatDistribution) and distribution.step is None:
        # a continuous range also samples between its ends: a non-integral value catches an integer key
        # (float(4, 8) for a batch size: 4.0 and 8.0 alone would pass as integers)
        values.append(distribution.low + (distribution.high - distribution.low) / 3)
    return values


def parse_space(search: dict[str, Any]) -> dict[str, Any]:
    """{canonical key: distribution} of a `search` mapping; every error is one ConfigError line."""
    if not isinstance(search, dict) or not search:
        raise ConfigError("search: expected a mapping of config keys to search expressions, e.g. "
                          "`search: {learning_rate: log(1e-5, 1e-3)}`")
    space: dict[str, Any] = {}
    for key, text in search.items():
        canonical = canonical_key(str(key))
        if canonical in space:
            raise ConfigError(f"search.{key}: {canonical} is searched twice; keep one entry")
        space[canonical] = parse_expression(str(key), text)
    return space


def check_space(base: dict[str, Any], space: dict[str, Any]) -> None:
    """Build the config with every edge value of every key (the others at the base values): a value a key cannot
    take (a warmup fraction of 1.5, a batch size of 0, a float for an integer key) is a ConfigError before any
    trial runs."""
    from tuneforge.config import load_config

    for key, distribution in space.items():
        for value in edge_values(distribution):
            try:
                load_config(base, {key: value})
            except ConfigError as err:
                raise ConfigError(f"search.{key}: the value {value!r} is not valid here ({err})") from None
