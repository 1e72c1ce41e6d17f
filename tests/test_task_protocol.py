"""Every registered task implements the whole Task protocol with its signatures, and every declaration on its
TaskSpec points at something real (config keys in the schema, importable objects, known kinds)."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from tuneforge.config.schema import SECTIONS
from tuneforge.tasks import Task, get_spec, load_declared, task_names

PROTOCOL = sorted(name for name, value in vars(Task).items() if inspect.isfunction(value) and not name.startswith("_"))


def _parameters(fn) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", task_names())
def test_task_class_implements_every_protocol_method_with_its_signature(name):
    cls = load_declared(get_spec(name).factory)
    for method in PROTOCOL:
        assert callable(getattr(cls, method, None)), f"{cls.__name__} lacks {method}"
        assert _parameters(getattr(cls, method)) == _parameters(getattr(Task, method)), f"{cls.__name__}.{method}"


def test_the_protocol_lists_what_the_engine_and_deploy_code_call():
    assert {"read_eval_file", "auto_class", "resolve", "fp16_safe", "init_eval_state", "logits", "targets",
            "predict"} <= set(PROTOCOL)
    assert "config" in inspect.signature(Task.predict).parameters


@pytest.mark.parametrize("name", task_names())
def test_spec_declarations_point_at_real_things(name):
    from tuneforge.deploy.verify import VERIFY_METRICS

    spec = get_spec(name)
    for section, keys in spec.config_keys.items():
        valid = {f.name for f in fields(SECTIONS[section])}
        assert set(keys) <= valid, f"{name}: unknown {section} keys {set(keys) - valid}"
    for training_key in spec.defaults.get("training", {}):
        assert training_key in {f.name for f in fields(SECTIONS["training"])}
    assert callable(load_declared(spec.onnx_class).export)
    if spec.baseline:
        assert callable(load_declared(spec.baseline))
    assert spec.verify_metrics in VERIFY_METRICS and spec.verify_measure
    assert spec.lora_task_type and spec.pipeline_tag and spec.card_metrics
    assert all(not spec.greater_is_better(m) for m in spec.lower_is_better)
    assert not spec.greater_is_better("eval_loss")


def test_lora_task_types_are_peft_task_types():
    from peft import TaskType

    assert {get_spec(n).lora_task_type for n in task_names()} <= {t.value for t in TaskType}


def test_metric_directions_are_declared_not_guessed():
    lower = {n: set(get_spec(n).lower_is_better) for n in task_names()}
    assert all("loss" in v for v in lower.values())
    assert any("perplexity" in v for v in lower.values())  # no longer "greater" for not ending in loss
