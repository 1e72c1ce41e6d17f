"""Every packaged recipe (src/tuneforge/recipes/<task>/*.yaml) loads and validates with the config loader, names a
registered task (the folder it sits in), and each value it sets is the value the loaded config holds; every
recipe the demo trains is packaged."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest
import yaml

from tuneforge.config import load_config
from tuneforge.tasks import task_names

ROOT = Path(str(resources.files("tuneforge"))) / "recipes"
RECIPES = sorted(ROOT.rglob("*.yaml"))


def test_recipes_are_packaged():
    assert RECIPES, f"no recipe under {ROOT}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_loads_and_validates(path):
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert raw["task"] in task_names(), f"{path}: task {raw['task']!r} is not registered"
    assert path.parent.name == raw["task"], f"{path}: a {raw['task']} recipe belongs in recipes/{raw['task']}/"
    # a recipe leaves the model and the data to the user (its header comment says which keys to give)
    given = {"model.model_name_or_path": "some/model", "data.train_file": "train.txt"}
    overrides = [f"{k}={v}" for k, v in given.items()
                 if (raw.get(k.split(".")[0]) or {}).get(k.split(".")[1]) is None]
    config = load_config(path, overrides)
    assert config.task == raw["task"]
    for section, values in raw.items():
        if section == "task":
            continue
        assert isinstance(values, dict), f"{path}: {section} is not a section"
        for key, value in values.items():
            if value is not None:
                assert getattr(getattr(config, section), key) == value, f"{path}: {section}.{key}"


def test_every_recipe_the_demo_trains_is_packaged():
    demo = Path(str(resources.files("tuneforge"))) / "demo"
    named = {m for file in demo.glob("*.py") for m in re.findall(r"train_recipe\(\s*[\"']([^\"']+)[\"']",
                                                                    file.read_text(encoding="utf-8"))}
    assert named, "the demo trains no packaged recipe; update this test"
    assert {n for n in named if not (ROOT / n).is_file()} == set()
