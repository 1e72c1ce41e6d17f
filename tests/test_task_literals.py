"""A task is one file in tasks/ plus one registry line: code elsewhere reads what the task declares (its
TaskSpec, its Task methods) instead of comparing task names. This test fails when a registered task's name
appears as a string literal in src/tuneforge outside tasks/ and demo/ beyond the allowlist below.

A literal counts when a string constant equals a task name exactly (`"seq2seq"`, `'causal_lm'`), wherever it
is: comparisons, dict keys, defaults, arguments. A name inside a longer string (prose such as "a seq2seq run",
a docstring example) does not count.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from tuneforge.tasks import task_names

SRC = Path(__file__).resolve().parents[1] / "src" / "tuneforge"
EXEMPT_DIRS = ("tasks", "demo")  # the tasks themselves; the demo runs one named task each

# (path under src/tuneforge, task name) -> (how many, why). At most 10 entries; each one a reason, not a switch.
ALLOWED: dict[tuple[str, str], tuple[int, str]] = {
}


def task_literals() -> Counter[tuple[str, str]]:
    names = set(task_names())
    found: Counter[tuple[str, str]] = Counter()
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] in EXEMPT_DIRS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found[(rel.as_posix(), node.value)] += 1
    return found


def test_allowlist_is_short_and_explained():
    assert len(ALLOWED) <= 10
    assert all(count >= 1 and len(why) > 10 for count, why in ALLOWED.values())


def test_no_task_name_literals_outside_tasks():
    found = task_literals()
    budget = Counter({key: count for key, (count, _why) in ALLOWED.items()})
    over = {key: n for key, n in found.items() if n > budget.get(key, 0)}
    assert not over, ("task names as string literals outside tasks/ and demo/ (declare what differs on the "
                      f"TaskSpec or the Task class instead): {over}")
    stale = {key: (budget[key], found.get(key, 0)) for key in budget if found.get(key, 0) < budget[key]}
    assert not stale, f"allowlist entries (allowed, found) to lower or remove: {stale}"


def test_the_counter_finds_literals():
    tree = ast.parse('x = {"seq2seq": 1}\nif task == "causal_lm": pass\ny = "a seq2seq run"\n')
    values = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert sorted(v for v in values if v in set(task_names())) == ["causal_lm", "seq2seq"]
