"""Behaviour of `tuneforge.config.load_config` / `render_config` and the config side of the CLI.

Product rule: every config error is one clear line naming the key (and file/line where there is one) with
a way to fix it, exit code 2 from the CLI, no traceback, and it comes back before torch is imported.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from conftest import one_line_error

from tuneforge.cli import main
from tuneforge.config import load_config, render_config
from tuneforge.config.schema import SECTIONS, applies
from tuneforge.errors import ConfigError, UserError

BASE = ["task=classification", "model_name_or_path=unused", "train_file=train.csv"]
NEEDED = ["model_name_or_path=unused", "train_file=train.csv"]  # everything but the task


def write_yaml(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(path=None, overrides=None) -> str:
    """The message of the ConfigError that loading raises; it must be exactly one line."""
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.strip() == message and message
    return message


def cli_error(capsys, argv: list[str]) -> str:
    line = one_line_error(capsys, argv)
    assert capsys.readouterr().out == ""
    return line


# ---- defaults and precedence ---------------------------------------------------------------------------

def test_classification_task_defaults():
    cfg = load_config(None, BASE)
    t = cfg.training
    assert cfg.task == "classification"
    assert t.learning_rate is None  # resolved from the model's width when it loads (tests/test_defaults.py)
    assert t.num_train_epochs is None  # resolved from the training rows (tests/test_defaults.py)
    assert t.warmup_steps == 0.1 and isinstance(t.warmup_steps, float)
    assert t.weight_decay == 0.01
    assert t.lr_scheduler_type == "linear"
    assert t.max_grad_norm == 1.0
    assert t.metric_for_best_model is None  # resolved from the problem type: f1_macro for single-label
    #                                         (tests/test_multilabel.py, tests/test_regression.py: the others)
    # schema defaults that no task overrides
    assert t.per_device_train_batch_size == 16 and t.seed == 42
    assert cfg.model.model_name_or_path == "unused" and cfg.data.train_file == "train.csv"


def test_precedence_defaults_then_yaml_then_overrides(tmp_path):
    path = write_yaml(tmp_path, """\
        task: classification
        model:
          model_name_or_path: from-yaml
        data:
          train_file: train.csv
        training:
          learning_rate: 5e-5
          num_train_epochs: 4
          seed: 7
        """)
    from_file = load_config(path)
    assert from_file.training.learning_rate == 5e-5          # YAML beats the task default
    assert from_file.training.num_train_epochs == 4.0
    assert from_file.training.weight_decay == 0.01           # untouched: task default
    assert from_file.model.model_name_or_path == "from-yaml"

    cfg = load_config(path, ["learning_rate=1e-4", "model.model_name_or_path=from-override"])
    assert cfg.training.learning_rate == 1e-4                # override beats YAML
    assert cfg.model.model_name_or_path == "from-override"
    assert cfg.training.num_train_epochs == 4.0              # YAML still beats the default
    assert cfg.training.seed == 7
    assert cfg.training.weight_decay == 0.01


def test_override_dict_and_parsed_yaml_dict():
    cfg = load_config({"task": "classification", "training": {"seed": 3}},
                      {"model_name_or_path": "unused", "train_file": "t.csv", "training.seed": 5})
    assert cfg.training.seed == 5


@pytest.mark.parametrize("yaml_text", [
    "training:\n  learning_rate: 3e-5\n  per_device_train_batch_size: 8\n",   # nested
    "training.learning_rate: 3e-5\ntraining.per_device_train_batch_size: 8\n",  # dotted
    "learning_rate: 3e-5\nper_device_train_batch_size: 8\n",                  # flat
], ids=["nested", "dotted", "flat"])
def test_yaml_key_spellings(tmp_path, yaml_text):
    path = write_yaml(tmp_path, "task: classification\n" + yaml_text)
    cfg = load_config(path, NEEDED)
    assert cfg.training.learning_rate == 3e-5
    assert cfg.training.per_device_train_batch_size == 8


@pytest.mark.parametrize("overrides", [
    ["training.learning_rate=3e-5", "training.per_device_train_batch_size=8", "data.text_column=body"],
    ["learning_rate=3e-5", "per_device_train_batch_size=8", "text_column=body"],
], ids=["dotted", "flat"])
def test_override_key_spellings(overrides):
    cfg = load_config(None, BASE + overrides)
    assert cfg.training.learning_rate == 3e-5
    assert cfg.training.per_device_train_batch_size == 8
    assert cfg.data.text_column == "body"


def test_yaml_exponent_without_dot_becomes_float(tmp_path):
    assert yaml.safe_load("x: 2e-5")["x"] == "2e-5"  # why the loader must coerce: YAML 1.1 reads a string
    path = write_yaml(tmp_path, "task: classification\ntraining:\n  learning_rate: 2e-5\n  adam_epsilon: 1e-6\n")
    cfg = load_config(path, NEEDED)
    assert cfg.training.learning_rate == 2e-5 and isinstance(cfg.training.learning_rate, float)
    assert cfg.training.adam_epsilon == 1e-6 and isinstance(cfg.training.adam_epsilon, float)


def test_null_on_a_task_default_key_means_task_default(tmp_path):
    # The schema documents `None` on a "Task default." field as "the task fills it in".
    path = write_yaml(tmp_path, "task: classification\ntraining:\n  warmup_steps: null\n")
    assert load_config(path, NEEDED).training.warmup_steps == 0.1
    for spelling in ("null", "none", "~", ""):
        assert load_config(None, BASE + [f"warmup_steps={spelling}"]).training.warmup_steps == 0.1
    # null on a key without a task default is kept
    assert load_config(None, BASE + ["save_total_limit=null"]).training.save_total_limit is None


def test_empty_yaml_section_and_empty_file(tmp_path):
    path = write_yaml(tmp_path, "task: classification\ntraining:\n  # learning_rate: 3e-5\nmodel:\n")
    assert load_config(path, NEEDED).training.warmup_steps == 0.1
    empty = write_yaml(tmp_path, "# nothing yet\n", name="empty.yaml")
    assert load_config(empty, BASE).training.warmup_steps == 0.1


def test_section_that_is_not_a_mapping(tmp_path):
    path = write_yaml(tmp_path, "task: classification\ntraining: 5\n")
    message = config_error(path, NEEDED)
    assert "run.yaml" in message and "training" in message and "mapping" in message


# ---- warmup_steps: int = steps, float in [0, 1) = ratio ----------------------------------------------------

@pytest.mark.parametrize("raw, expected, kind", [
    ("100", 100, int), ("0", 0, int), ("0.25", 0.25, float), ("0.0", 0.0, float), ("5e-2", 0.05, float),
])
def test_warmup_steps_keeps_int_or_float(raw, expected, kind):
    value = load_config(None, BASE + [f"warmup_steps={raw}"]).training.warmup_steps
    assert value == expected and type(value) is kind


def test_warmup_steps_int_from_yaml_stays_int(tmp_path):
    path = write_yaml(tmp_path, "task: classification\ntraining:\n  warmup_steps: 500\n")
    value = load_config(path, NEEDED).training.warmup_steps
    assert value == 500 and type(value) is int


@pytest.mark.parametrize("raw", ["1.5", "1.0", "-3", "-0.1"])
def test_warmup_steps_out_of_range(raw):
    message = config_error(None, BASE + [f"warmup_steps={raw}"])
    assert "training.warmup_steps" in message


def test_warmup_steps_error_explains_the_two_meanings():
    message = config_error(None, BASE + ["warmup_steps=1.5"])
    assert "[0, 1)" in message and "int" in message and "1.5" in message


# ---- unknown keys, aliases, types, choices -----------------------------------------------------------------

@pytest.mark.parametrize("override", ["learnin_rate=1e-4", "training.learnin_rate=1e-4"])
def test_unknown_key_suggests_nearest(override):
    message = config_error(None, BASE + [override])
    assert "learnin_rate" in message
    assert "did you mean learning_rate" in message


def test_unknown_key_in_yaml_names_file_and_key(tmp_path):
    path = write_yaml(tmp_path, "task: classification\ntraining:\n  num_train_epoch: 2\n")
    message = config_error(path, NEEDED)
    assert "run.yaml" in message and "num_train_epoch" in message and "did you mean num_train_epochs" in message


def test_known_key_under_the_wrong_section_points_to_the_right_one(tmp_path):
    message = config_error(None, BASE + ["model.learning_rate=1e-4"])
    assert "model.learning_rate" in message and "training.learning_rate" in message
    path = write_yaml(tmp_path, "task: classification\ndata:\n  seed: 1\n")
    assert "training.seed" in config_error(path, NEEDED)


def test_unknown_section():
    message = config_error(None, BASE + ["train.learning_rate=1e-4"])
    assert "'train'" in message and "model, data, training" in message


@pytest.mark.parametrize("alias, target", [
    ("warmup_ratio=0.1", "warmup_steps"),
    ("lr=1e-4", "learning_rate"),
    ("epochs=2", "num_train_epochs"),
    ("batch_size=8", "per_device_train_batch_size"),
    ("evaluation_strategy=epoch", "eval_strategy"),
])
def test_aliases_from_other_tools_point_to_the_tuneforge_key(alias, target):
    message = config_error(None, BASE + [alias])
    key = alias.split("=")[0]
    assert repr(key) in message
    assert f"did you mean {target}" in message


@pytest.mark.parametrize("override, key", [
    ("per_device_train_batch_size=abc", "training.per_device_train_batch_size"),
    ("learning_rate=fast", "training.learning_rate"),
    ("use_cpu=maybe", "training.use_cpu"),
    ("seed=1.5", "training.seed"),
    ("warmup_steps=lots", "training.warmup_steps"),
    ("max_length=[1, 2]", "data.max_length"),
])
def test_wrong_type_names_the_key(override, key):
    message = config_error(None, BASE + [override])
    assert message.startswith(key + ":")
    assert override.split("=", 1)[1].split(",")[0].strip("[") in message


@pytest.mark.parametrize("override, key", [
    ("learning_rate=0", "training.learning_rate"),
    ("per_device_train_batch_size=0", "training.per_device_train_batch_size"),
    ("validation_split_percentage=100", "data.validation_split_percentage"),
    ("max_length=1", "data.max_length"),
    ("eval_strategy=steps", "training.eval_steps"),
])
def test_invalid_values_name_the_key(override, key):
    message = config_error(None, BASE + [override])
    assert message.startswith(key + ":"), message


def test_bool_and_int_coercion_from_strings():
    cfg = load_config(None, BASE + ["use_cpu=yes", "seed=7", "max_steps=10", "training.save_total_limit=none"])
    assert cfg.training.use_cpu is True and cfg.training.seed == 7 and cfg.training.max_steps == 10
    assert cfg.training.save_total_limit is None


def test_invalid_choice_suggests_the_nearest():
    message = config_error(None, BASE + ["lr_scheduler_type=cosin"])
    assert message.startswith("training.lr_scheduler_type:")
    assert "'cosin'" in message and "did you mean 'cosine'" in message
    assert "linear" in message  # lists the valid ones


def test_override_without_equals_sign():
    message = config_error(None, BASE + ["learning_rate"])
    assert "'learning_rate'" in message and "key=value" in message


# ---- task, required keys, metric -----------------------------------------------------------------------

def test_missing_task():
    message = config_error(None, NEEDED)
    assert message.startswith("task: missing") and "classification" in message


def test_unknown_task_suggests_nearest():
    message = config_error(None, ["task=clasification"] + NEEDED)
    assert "'clasification'" in message and "did you mean 'classification'" in message


def test_missing_model_and_train_file():
    assert config_error(None, ["task=classification", "train_file=t.csv"]).startswith("model.model_name_or_path:")
    assert config_error(None, ["task=classification", "model_name_or_path=m"]).startswith("data.train_file:")


def test_train_file_and_dataset_name_are_exclusive():
    assert "either train_file or dataset_name" in config_error(None, BASE + ["dataset_name=imdb"])


def test_unknown_metric_for_best_model():
    message = config_error(None, BASE + ["metric_for_best_model=f1macro"])
    assert message.startswith("training.metric_for_best_model:")
    assert "'f1macro'" in message and "did you mean 'f1_macro'" in message and "accuracy" in message
    message = config_error(None, BASE + ["metric_for_best_model=bleu"])
    assert "'bleu'" in message and "f1_macro" in message


def test_metric_with_eval_prefix_is_accepted():
    cfg = load_config(None, BASE + ["metric_for_best_model=eval_accuracy"])
    assert cfg.training.metric_for_best_model == "eval_accuracy"


# ---- the YAML file itself ----------------------------------------------------------------------------------

def test_invalid_yaml_reports_file_and_line(tmp_path):
    path = write_yaml(tmp_path, "task: classification\ntraining:\n  learning_rate: 1e-4: oops\n")
    message = config_error(path, NEEDED)
    assert "run.yaml" in message and "line 3" in message and "invalid YAML" in message


def test_yaml_with_tab_indentation_reports_line(tmp_path):
    path = write_yaml(tmp_path, "task: classification\ntraining:\n\tseed: 1\n")
    message = config_error(path, NEEDED)
    assert "line 3" in message


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = write_yaml(tmp_path, "- task\n- classification\n")
    message = config_error(path, NEEDED)
    assert "run.yaml" in message and "mapping" in message


def test_yaml_not_utf8(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"task: classification\n# caf\xe9\n")
    assert "UTF-8" in config_error(path, NEEDED)


def test_data_file_given_as_config_path(tmp_path):
    message = config_error(tmp_path / "train.csv", [])
    assert "train.csv" in message and "not a YAML file" in message and "train_file=" in message


def test_config_file_not_found(tmp_path):
    message = config_error(tmp_path / "nope.yaml", [])
    assert "nope.yaml" in message and "not found" in message and "tuneforge config" in message


# ---- render_config ---------------------------------------------------------------------------------------

def test_rendered_config_round_trips_to_the_defaults(tmp_path):
    text = render_config("classification")
    path = write_yaml(tmp_path, text, name="rendered.yaml")
    parsed = yaml.safe_load(text)
    assert parsed["task"] == "classification"
    for name, cls in SECTIONS.items():  # every key that applies to the task is written out, no other
        expected = {f.name for f in fields(cls) if applies(f, "classification", name)}
        assert set(parsed.get(name, {})) == expected, name
    from_file = load_config(path, NEEDED)
    assert from_file.to_dict() == load_config(None, BASE).to_dict()
    t = from_file.training
    assert (t.learning_rate, t.num_train_epochs, t.warmup_steps, t.weight_decay, t.lr_scheduler_type,
            t.max_grad_norm) == (None, None, 0.1, 0.01, "linear", 1.0)
    assert type(t.warmup_steps) is float


@pytest.mark.parametrize("task", ["classification", "seq2seq"])
def test_rendered_config_documents_every_key(task):
    text = render_config(task)
    lines = text.splitlines()
    for name, cls in SECTIONS.items():
        for f in fields(cls):
            found = [i for i, line in enumerate(lines) if line.startswith(f"  {f.name}:")]
            if not applies(f, task, name):
                assert not found, f"{f.name} does not apply to {task}"
                continue
            assert lines[found[0] - 1].startswith("  # ") and len(lines[found[0] - 1]) > 6, f.name
    assert f"({task} default)" in text
    rendered = yaml.safe_load(text)
    rendered["model"]["model_name_or_path"], rendered["data"]["train_file"] = "m", "t.jsonl"
    assert load_config(rendered).to_dict() == rendered  # the printed config is complete and reloads as is


def test_render_unknown_task():
    with pytest.raises(ConfigError, match="did you mean 'classification'"):
        render_config("clasification")


# ---- CLI ---------------------------------------------------------------------------------------------------

def test_cli_config_prints_the_rendered_config(capsys):
    assert main(["config", "classification"]) == 0
    captured = capsys.readouterr()
    assert captured.out == render_config("classification")
    assert captured.err == ""


def test_cli_train_config_error_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, ["train", "task=classification", "model_name_or_path=unused",
                              "train_file=train.csv", "learnin_rate=1e-4"])
    assert "learnin_rate" in line and "did you mean learning_rate" in line


def test_cli_train_bad_yaml_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_yaml(tmp_path, "task: classification\ntraining:\n  seed: [1\n")
    line = cli_error(capsys, ["train", "run.yaml", "model_name_or_path=unused", "train_file=train.csv"])
    assert "run.yaml" in line and "line" in line and "invalid YAML" in line


def test_cli_train_csv_as_config(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, ["train", "train.csv"])
    assert "not a YAML file" in line


def test_user_errors_are_exit_code_2():
    assert ConfigError.exit_code == 2 and issubclass(ConfigError, UserError)


_NO_TORCH_PROBE = """
import sys
from tuneforge.cli import main
results = []
for argv in ({config_error!r}, {data_error!r}):
    try:
        rc = main(argv)
    except SystemExit as exit:
        rc = exit.code
    results.append((rc, 'torch' in sys.modules))
print(results)
"""


def test_subprocess_one_line_exit_2_and_no_torch(tmp_path):
    missing = tmp_path / "missing.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "tuneforge", "train", "task=classification", "model_name_or_path=x",
         f"train_file={missing}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "missing.csv" in lines[0]
    assert proc.stdout == ""

    # Config and data errors come back before torch is even imported.
    bad_data = tmp_path / "bad.csv"
    bad_data.write_bytes(b"text,label\nfine,a\n\xff\xfe,b\n")
    code = _NO_TORCH_PROBE.format(
        config_error=["train", "task=classification", "model_name_or_path=x", f"train_file={bad_data}",
                      "lr_scheduler_type=cosin"],
        data_error=["train", "task=classification", "model_name_or_path=x", f"train_file={bad_data}"])
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                           timeout=120, check=False)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[(2, False), (2, False)]", (probe.stdout, probe.stderr)
    errors = probe.stderr.splitlines()
    assert len(errors) == 2 and "cosine" in errors[0] and "line 3" in errors[1], probe.stderr
