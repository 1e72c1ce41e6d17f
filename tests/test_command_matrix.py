"""Every user command on a finished tiny run of every task (issue 17, part 5): exit 0, no traceback, and the
command's output is there and reloads.

The tasks come from `tuneforge.tasks.task_names()` at collection time, so a new task joins the matrix by
itself; it fails (`test_every_task_has_a_tiny_run`) until RUNS below says how to build its tiny run. The
export formats and the task-only inference commands (`summarize`, `generate`) are read from the CLI's own
parser, so a new format or command joins too. Commands run in-process through `tuneforge.cli.main` (an
uncaught exception fails the test with its traceback); only `serve`, whose exit code, stderr and socket are
what is tested, runs as a subprocess.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    LM_CORPUS,
    base_overrides,
    copy_rows,
    multilabel_rows,
    qa_rows,
    regression_rows,
    toy_rows,
    write_csv,
    write_jsonl,
    write_squad,
)

from tuneforge.cli import build_parser, main
from tuneforge.tasks import get_spec, task_names

INPUTS = ["the movie was great", "red cat blue dog", "the early bird"]  # one per line of the --input .txt file
OUTPUTS = ("label", "generated_text", "entities", "answer",  # what a prediction holds: one of these, by task
           "labels")  # (classification: multi-label sets); a regression prediction holds only a "score"


def one_output(row: dict) -> bool:
    """The row holds exactly one task output (a QA answer also carries its score; a regression row is a score)."""
    found = sum(k in row for k in OUTPUTS)
    return found == 1 or (found == 0 and "score" in row)


@dataclass
class TinyRun:
    key: str
    task: str
    path: Path
    overrides: list[str]  # the training overrides (reused by lr-find)
    train_rc: int
    train_err: str


def _classification(models: dict[str, Path], folder: Path) -> list[str]:
    data = {"train": write_csv(folder / "train.csv", toy_rows(64, 1)),
            "validation": write_csv(folder / "validation.csv", toy_rows(16, 2))}
    return base_overrides(models["bert"], data, folder / "run", max_steps=4, num_train_epochs=1,
                          test_file=str(write_csv(folder / "test.csv", toy_rows(16, 3))))


def _multilabel(models: dict[str, Path], folder: Path) -> list[str]:
    data = {"train": write_jsonl(folder / "train.jsonl", multilabel_rows(64, 1)),
            "validation": write_jsonl(folder / "validation.jsonl", multilabel_rows(16, 2))}
    return base_overrides(models["bert"], data, folder / "run", max_steps=4, num_train_epochs=1)


def _regression(models: dict[str, Path], folder: Path) -> list[str]:
    data = {"train": write_jsonl(folder / "train.jsonl", regression_rows(64, 1)),
            "validation": write_jsonl(folder / "validation.jsonl", regression_rows(16, 2))}
    return base_overrides(models["bert"], data, folder / "run", max_steps=4, num_train_epochs=1,
                          label_column="score", problem_type="regression")


def _seq2seq(models: dict[str, Path], folder: Path) -> list[str]:
    items = {"task": "seq2seq", "model_name_or_path": str(models["bart"]),
             "train_file": str(write_jsonl(folder / "train.jsonl", copy_rows(48, 1))),
             "validation_file": str(write_jsonl(folder / "validation.jsonl", copy_rows(12, 2))),
             "target_column": "summary", "max_target_length": 16, "num_beams": 1, "max_new_tokens": 6,
             "max_steps": 4, "per_device_train_batch_size": 16, "learning_rate": 3e-3}
    return _common(items, folder)


def _causal_lm(models: dict[str, Path], folder: Path) -> list[str]:
    corpus = folder / "corpus.txt"
    corpus.write_text("\n\n".join(LM_CORPUS) + "\n", encoding="utf-8")
    items = {"task": "causal_lm", "model_name_or_path": str(models["gpt2"]), "train_file": str(corpus),
             "validation_file": str(corpus), "block_size": 32, "max_new_tokens": 4, "max_steps": 4,
             "learning_rate": 3e-3}
    return _common(items, folder)


def _causal_lm_chat(models: dict[str, Path], folder: Path) -> list[str]:
    conv = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "the early bird"},
            {"role": "user", "content": "more"}, {"role": "assistant", "content": "catches the worm"}]
    path = write_jsonl(folder / "chat.jsonl", [{"messages": conv}] * 8)
    items = {"task": "causal_lm", "model_name_or_path": str(models["gpt2"]), "train_file": str(path),
             "validation_file": str(path), "max_new_tokens": 4, "max_steps": 4, "learning_rate": 3e-3}
    return _common(items, folder)


def _token_classification(models: dict[str, Path], folder: Path) -> list[str]:
    """CoNLL training file, JSON Lines validation file, windows of 16 tokens (the longer sentences are windowed)."""
    rows = [(["we", "met", "ada", "lovelace", "in", "paris", "the", "movie", "was", "great"],
             ["O", "O", "B-PER", "I-PER", "O", "B-LOC", "O", "O", "O", "O"]),
            (["the", "early", "bird", "in", "rome"], ["O", "O", "O", "O", "B-LOC"])]
    conll = folder / "train.conll"
    conll.write_text("".join("".join(f"{w} {t}\n" for w, t in zip(*r)) + "\n" for r in rows * 16), encoding="utf-8")
    validation = write_jsonl(folder / "validation.jsonl", [{"tokens": w, "ner_tags": t} for w, t in rows * 4])
    items = {"task": "token_classification", "model_name_or_path": str(models["bert"]), "train_file": str(conll),
             "validation_file": str(validation), "test_file": str(validation), "max_length": 16, "stride": 4,
             "max_steps": 4, "learning_rate": 3e-3}
    return _common(items, folder)


def _question_answering(models: dict[str, Path], folder: Path) -> list[str]:
    """A nested SQuAD v2 training file, JSON Lines validation and test files, windows of 24 tokens."""
    items = {"task": "question_answering", "model_name_or_path": str(models["bert"]),
             "train_file": str(write_squad(folder / "train.json", qa_rows(48, 1, words=(4, 30)))),
             "validation_file": str(write_jsonl(folder / "validation.jsonl", qa_rows(12, 2))),
             "test_file": str(write_jsonl(folder / "test.jsonl", qa_rows(12, 3))), "max_length": 24, "stride": 6,
             "max_steps": 4, "learning_rate": 3e-3}
    return _common(items, folder)


def _pairs(run: TinyRun) -> list[str] | None:
    """Second texts for INPUTS when the run's task reads pairs (question answering: a context per question)."""
    return list(reversed(INPUTS)) if len(get_spec(run.task).input_keys) > 1 else None


def _common(items: dict[str, Any], folder: Path) -> list[str]:
    items = {**items, "output_dir": str(folder / "run"), "report_to": "none", "seed": 0, "save_strategy": "no",
             "preprocessing_cache_dir": str(folder / "cache")}
    return [f"{k}={v}" for k, v in items.items()]


# key -> (task, builder of the training overrides); one entry per task at least
RUNS: dict[str, tuple[str, Callable[[dict[str, Path], Path], list[str]]]] = {
    "classification": ("classification", _classification),
    "classification-multilabel": ("classification", _multilabel),
    "classification-regression": ("classification", _regression),
    "seq2seq": ("seq2seq", _seq2seq),
    "causal_lm": ("causal_lm", _causal_lm),
    "causal_lm-chat": ("causal_lm", _causal_lm_chat),
    "token_classification": ("token_classification", _token_classification),
    "question_answering": ("question_answering", _question_answering),
}
TASKS = task_names()
KEYS = [k for k, (task, _) in RUNS.items() if task in TASKS]


def _parser_choices() -> tuple[list[str], list[str | None], dict[str, tuple[str, str]]]:
    """Export formats and quantizations offered by `tuneforge export`, and the commands tied to one task
    (command -> (task, its text flag))."""
    import argparse

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    export = {a.dest: a for a in sub.choices["export"]._actions}
    task_commands = {name: (p.get_default("require_task"),
                            next(a.option_strings[0] for a in p._actions if a.dest == "text"))
                     for name, p in sub.choices.items() if p.get_default("require_task")}
    return list(export["format"].choices), [None, *export["quantize"].choices], task_commands


FORMATS, QUANTIZE, TASK_COMMANDS = _parser_choices()


def test_every_task_has_a_tiny_run():
    missing = set(TASKS) - {task for task, _ in RUNS.values()}
    assert not missing, f"no tiny run for task(s) {sorted(missing)}: add a builder to RUNS in {__file__}"
    assert TASK_COMMANDS, "no task-only inference command (summarize/generate) found in the CLI parser"
    assert {task for task, _ in TASK_COMMANDS.values()} <= set(TASKS)


class Matrix:
    """Tiny runs trained on first use with `tuneforge train` in-process, each once per session, all under one
    root; a run whose training failed fails every test of its key (and only those)."""

    def __init__(self, models: dict[str, Path], root: Path):
        self.models, self.root, self.runs = models, root, {}

    def __getitem__(self, key: str) -> TinyRun:
        import contextlib
        import io

        if key not in self.runs:
            task, build = RUNS[key]
            folder = self.root / key
            folder.mkdir()
            overrides = build(self.models, folder)
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    rc = main(["train", *overrides])
            except Exception as exc:  # noqa: BLE001 - kept, reported by every test of this key
                self.runs[key] = exc
            else:
                self.runs[key] = TinyRun(key, task, folder / "run", overrides, rc, err.getvalue())
        run = self.runs[key]
        if isinstance(run, Exception):
            raise run
        assert run.train_rc == 0 and "Traceback" not in run.train_err, run.train_err
        return run

    def values(self) -> list[TinyRun]:
        return [self[key] for key in KEYS]


@pytest.fixture(scope="session")
def matrix(tiny_bert, tiny_bart, tiny_gpt2_lm, tmp_path_factory) -> Matrix:
    return Matrix({"bert": tiny_bert, "bart": tiny_bart, "gpt2": tiny_gpt2_lm}, tmp_path_factory.mktemp("matrix"))


def _run(capsys, argv: list[str]) -> str:
    """`tuneforge ARGV` in-process: exit 0, nothing that looks like a traceback or error on stderr; stdout."""
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, f"tuneforge {' '.join(argv)} exited {rc}: {err}"
    assert "Traceback" not in err and "error:" not in err, err
    return out


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # rich tables fold long run ids on a narrow terminal


@pytest.mark.parametrize("key", KEYS)
def test_train(matrix, key):
    run = matrix[key]  # trains it: exit 0, no traceback
    record = json.loads((run.path / "run.json").read_text())
    assert record["status"] == "finished" and record["task"] == run.task
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["eval"]["loss"] > 0
    assert (run.path / "model.safetensors").exists() and (run.path / "run_config.yaml").exists()


@pytest.mark.parametrize("key", KEYS)
def test_config_renders_a_config_that_loads(matrix, key, capsys, tmp_path):
    from tuneforge.config import load_config

    """`tuneforge config TASK > run.yaml` holds exactly the defaults: with the run's overrides on top it loads
    to the same config as the overrides alone."""
    run = matrix[key]
    path = tmp_path / "run.yaml"
    path.write_text(_run(capsys, ["config", run.task]), encoding="utf-8")
    assert load_config(path, run.overrides) == load_config(None, run.overrides)


@pytest.mark.parametrize("key", KEYS)
def test_evaluate(matrix, key, capsys):
    run = matrix[key]
    out = _run(capsys, ["evaluate", str(run.path), "--split", "validation", "--name", "matrix"])
    folder = run.path / "eval" / "matrix"
    assert str(folder) in out
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["rows"] > 0 and metrics["loss"] > 0
    assert json.loads((folder / "error_analysis.json").read_text())
    assert (folder / "error_analysis.md").read_text().strip()


@pytest.mark.parametrize("key", KEYS)
def test_predict_file_has_one_row_per_input(matrix, key, capsys, tmp_path):
    run = matrix[key]
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("\n".join(INPUTS) + "\n", encoding="utf-8")
    if _pairs(run):  # a pair task reads a file with its two input columns (QA: question and context)
        from tuneforge.config import load_config

        data = load_config(run.path / "run_config.yaml").data
        first, second = (getattr(data, k) for k in get_spec(run.task).input_keys)
        inputs = write_jsonl(tmp_path / "inputs.jsonl", [{first: t, second: p} for t, p in zip(INPUTS, _pairs(run))])
    for suffix in (".jsonl", ".csv"):
        output = tmp_path / f"predictions{suffix}"
        _run(capsys, ["predict", str(run.path), "--input", str(inputs), "--output", str(output)])
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
        else:
            with open(output, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        assert [r["text"] for r in rows] == INPUTS
        assert all(one_output(r) for r in rows), rows


@pytest.mark.parametrize("key", KEYS)
def test_task_commands_print_one_line_per_text(matrix, key, capsys):
    """`summarize` / `generate` on the run of their task; every other task's run is refused in one line."""
    run = matrix[key]
    for command, (task, flag) in TASK_COMMANDS.items():
        argv = [command, str(run.path), flag, INPUTS[0], flag, INPUTS[1]]
        if task == run.task:
            lines = _run(capsys, argv).splitlines()
            assert len(lines) == 2 and [line.split("\t")[-1] for line in lines] == INPUTS[:2], lines
        else:
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("key", KEYS)
def test_report_rebuilds_html_and_card(matrix, key, capsys):
    run = matrix[key]
    for name in ("report.html", "README.md"):
        (run.path / name).unlink()
    _run(capsys, ["report", str(run.path)])
    html = (run.path / "report.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "</html>" in html
    card = (run.path / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n")  # the model card's YAML metadata block
    assert yaml.safe_load(card.split("---\n")[1])


@pytest.mark.parametrize("key", KEYS)
def test_runs_show_list_compare(matrix, key, capsys):
    run = matrix[key]
    root = str(run.path.parent.parent)  # unused by a path reference, but the documented option
    run_id = json.loads((run.path / "run.json").read_text())["id"]
    shown = _run(capsys, ["runs", "show", str(run.path), "--root", root])
    assert run_id in shown and run.task in shown
    other = matrix[KEYS[(KEYS.index(key) + 1) % len(KEYS)]]
    compared = _run(capsys, ["runs", "compare", str(run.path), str(other.path), "--root", root])
    assert run_id in compared


def test_runs_list_shows_every_run(matrix, capsys, tmp_path):
    root = tmp_path / "runs"  # `runs list` reads one root: link every run's folder under it
    root.mkdir()
    runs = matrix.values()
    for run in runs:
        (root / run.key).symlink_to(run.path, target_is_directory=True)
    listed = _run(capsys, ["runs", "list", "--root", str(root)])
    assert f"{len(runs)} runs" in listed
    for run in runs:
        assert json.loads((run.path / "run.json").read_text())["id"] in listed
    listed = _run(capsys, ["runs", "list", "--root", str(root), "--status", "finished", "--task", TASKS[0]])
    assert f"{sum(r.task == TASKS[0] for r in runs)} runs" in listed


def _export_cases() -> list[Any]:
    """Every (run, format, quantization) the export command offers, with two cuts for CI time (an ONNX export
    costs 5-15 s on 2 cores, the rest well under 1 s): ONNX only for the first run of each task (the chat run's
    model is the same GPT-2 graph as the text run's; its safetensors exports verify on chat data), and ONNX int8
    marked slow (`make test` runs slow tests; tests/test_export.py checks int8 ONNX quality on trained runs)."""
    first = {task: next(k for k in KEYS if RUNS[k][0] == task) for task in {RUNS[k][0] for k in KEYS}}
    cases = []
    for key in KEYS:
        for fmt in FORMATS:
            if fmt == "onnx" and first[RUNS[key][0]] != key:
                continue
            for quantize in QUANTIZE:
                marks = [pytest.mark.slow] if fmt == "onnx" and quantize else []
                cases.append(pytest.param(key, fmt, quantize, marks=marks, id=f"{key}-{fmt}-{quantize or 'full'}"))
    return cases


@pytest.mark.parametrize(("key", "fmt", "quantize"), _export_cases())
def test_export(matrix, key, fmt, quantize, capsys, tmp_path):
    if fmt == "onnx":
        for module in ("onnx", "onnxruntime", "onnxscript"):
            pytest.importorskip(module)
    run = matrix[key]
    out = tmp_path / "export"
    # a random-init tiny model may flip labels when quantized; the matrix checks the command, not int8 quality
    argv = ["export", str(run.path), "--format", fmt, "--output", str(out), "--max-examples", "8",
            "--latency-examples", "1"] + (["--quantize", quantize, "--min-agreement", "0"] if quantize else [])
    _run(capsys, argv)
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["format"] == fmt and manifest["quantize"] == quantize and manifest["task"] == run.task
    assert all((out / name).exists() for name in manifest["files"]) and manifest["files"]
    assert json.loads((out / "report.json").read_text())["passed"] is True
    import tuneforge

    pairs = _pairs(run)
    result = tuneforge.load(out).predict(INPUTS[:1], pairs[:1] if pairs else None)
    assert len(result) == 1 and one_output(result[0]), result


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


class Servers:
    """`tuneforge serve RUN --port 0` subprocesses, all started on first use so that they load side by side
    (most of each start is importing torch and transformers); stopped at the end of the session."""

    def __init__(self, matrix: Matrix, logs: Path):
        self.matrix, self.logs, self.procs = matrix, logs, {}

    def __getitem__(self, key: str) -> subprocess.Popen:
        if not self.procs:
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
            env.pop("TUNEFORGE_API_KEY", None)
            for k in KEYS:
                try:
                    path = self.matrix[k].path
                except Exception:  # noqa: BLE001 - that key's tests report its training failure
                    continue
                with open(self.logs / f"{k}.stderr", "w") as err:  # a file: an unread pipe could fill and block
                    self.procs[k] = subprocess.Popen(
                        [sys.executable, "-m", "tuneforge", "serve", str(path), "--port", "0", "--log-level",
                         "warning"], stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        self.matrix[key]  # a failed training fails here
        return self.procs[key]

    def first_line(self, proc: subprocess.Popen, timeout: float = 120) -> str:
        """The line `serve` prints once the model is loaded and the socket bound; '' if it exits or times out."""
        import queue
        import threading

        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        try:
            return lines.get(timeout=timeout)
        except queue.Empty:
            return ""

    def stop(self, key: str) -> str:
        """SIGTERM (then SIGKILL after 20 s); returns its stderr."""
        proc = self.procs[key]
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return (self.logs / f"{key}.stderr").read_text()


@pytest.fixture(scope="session")
def servers(matrix, tmp_path_factory):
    started = Servers(matrix, tmp_path_factory.mktemp("servers"))
    yield started
    for key in started.procs:
        started.stop(key)


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


@pytest.mark.parametrize("key", KEYS)
def test_serve_answers_one_request(servers, key):
    """`tuneforge serve` as a subprocess on a free port: its POST route (read from its own OpenAPI document)
    answers 200 with every field the document requires; SIGTERM stops it without a traceback."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    proc = servers[key]
    try:
        line = servers.first_line(proc)
        assert " on http://127.0.0.1:" in line, (line, servers.stop(key))
        url = line.split(" on ")[1].split()[0]
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"{url}/health", timeout=5).status_code == 200
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not come up"
                time.sleep(0.05)
        document = httpx.get(f"{url}/openapi.json", timeout=5).json()
        routes = [p for p, ops in document["paths"].items() if "post" in ops and p.startswith("/v1/")]
        assert len(routes) == 1, routes
        request = _resolve(document["paths"][routes[0]]["post"]["requestBody"]["content"]["application/json"]
                           ["schema"], document)
        r = httpx.post(f"{url}{routes[0]}", json={name: [INPUTS[0]] for name in request["required"]}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        response = _resolve(document["paths"][routes[0]]["post"]["responses"]["200"]["content"]
                            ["application/json"]["schema"], document)
        assert set(response.get("required", [])) <= set(body), (response, body)
        assert len(body["results"]) == 1
        item = _resolve(response["properties"]["results"]["items"], document)
        assert item.get("required") and set(item["required"]) <= set(body["results"][0]), (item, body)
    finally:
        err = servers.stop(key)
    assert "Traceback" not in err, err


@pytest.mark.parametrize("key", KEYS)
def test_lr_find(matrix, key, capsys, tmp_path):
    run = matrix[key]
    overrides = [o for o in run.overrides if not o.startswith(("output_dir=", "learning_rate=", "max_steps="))]
    out = tmp_path / "lr_find"
    _run(capsys, ["lr-find", *overrides, "lr_find_num_steps=6", "--output", str(out)])
    with open(out / "lr_find.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(float(r["learning_rate"]) > 0 for r in rows)
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
