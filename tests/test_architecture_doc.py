"""docs/ARCHITECTURE.md lists every module under src/tuneforge once, and only modules that exist; its "How to
add a task" section names every TaskSpec field.

The list is the "## Modules" section: markdown table rows whose first cell is a module path in backticks,
relative to src/tuneforge (`engine/loop.py`, `__init__.py`), and whose second cell says what it holds.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "tuneforge"
DOC = ROOT / "docs" / "ARCHITECTURE.md"
ROW = re.compile(r"^\|\s*`(?P<path>[^`]+\.py)`\s*\|(?P<what>[^|]*)\|")


def module_section(text: str) -> list[str]:
    """The lines of the "## Modules" section (up to the next level-2 heading)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Modules"), None)
    assert start is not None, "docs/ARCHITECTURE.md has no '## Modules' section"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start + 1:end]


def listed_modules(text: str) -> list[tuple[str, str]]:
    """(path, description) of every module row of the list, in order."""
    return [(m["path"], m["what"].strip()) for line in module_section(text) if (m := ROW.match(line.strip()))]


def tree_modules() -> set[str]:
    return {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if "__pycache__" not in p.parts}


def test_every_module_is_listed_and_every_listed_module_exists():
    listed = listed_modules(DOC.read_text(encoding="utf-8"))
    paths = [path for path, _ in listed]
    tree = tree_modules()
    missing = sorted(tree - set(paths))
    unknown = sorted(set(paths) - tree)
    assert not missing, f"modules missing from docs/ARCHITECTURE.md's module list: {missing}"
    assert not unknown, f"docs/ARCHITECTURE.md lists modules that do not exist under src/tuneforge: {unknown}"


def test_each_module_is_listed_once_with_a_description():
    listed = listed_modules(DOC.read_text(encoding="utf-8"))
    twice = sorted(path for path, n in Counter(path for path, _ in listed).items() if n > 1)
    assert not twice, f"listed more than once: {twice}"
    empty = [path for path, what in listed if not what]
    assert not empty, f"listed without saying what they hold: {empty}"


def test_the_parser_reads_the_format():
    text = "\n".join(["# T", "## Modules", "| module | what |", "|---|---|", "| `engine/loop.py` | the loop |",
                      "| `__init__.py` | the face |", "## Decisions", "| `x.py` | not in the list |"])
    assert listed_modules(text) == [("engine/loop.py", "the loop"), ("__init__.py", "the face")]
    assert "engine/loop.py" in tree_modules() and "__init__.py" in tree_modules()


def test_how_to_add_a_task_names_every_taskspec_field():
    from dataclasses import fields

    from tuneforge.tasks import TaskSpec

    text = DOC.read_text(encoding="utf-8")
    start = text.index("## How to add a task")
    section = text[start:text.index("\n## ", start + 1)]
    missing = [f.name for f in fields(TaskSpec) if f"`{f.name}`" not in section]
    assert not missing, f"TaskSpec fields not described in docs/ARCHITECTURE.md 'How to add a task': {missing}"
