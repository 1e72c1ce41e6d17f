"""The bad-input corpus: each malformed input goes through the real CLI in its own process and must give one
clear `error:` line (what, where, how to fix), exit code 2, no traceback, and no run folder that looks finished.

Cases that fail in the data or config checks never import torch, so most cases cost under a second.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

GOOD = "text,label\n" + "".join(f"{w} example {i},{w}\n" for i in range(6) for w in ("good", "bad"))


UGLY = "text,label\nx y,ugly\n"


def _csv(folder: Path, name: str = "train.csv", text: str = GOOD) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _train(folder: Path, *extra: str, train: Path | None = None, model: str = "unused", task: str = "classification"):
    return ["train", f"task={task}", f"model_name_or_path={model}", f"train_file={train or _csv(folder)}",
            f"output_dir={folder / 'run'}", "report_to=none", *extra]


def _model_with(tiny_bert: Path, folder: Path, change) -> str:
    model = folder / "model"
    shutil.copytree(tiny_bert, model)
    change(model)
    return str(model)


def _cut_safetensors(model: Path) -> None:
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])


def _unknown_model_type(model: Path) -> None:
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "no-such-architecture"}))


# each case: (id, builder(folder, tiny_bert) -> argv, words the error line must contain)
CASES = [
    ("utf16-encoding", lambda f, m: _train(f, train=_bytes(f, "t.csv", GOOD.encode("utf-16"))), ["t.csv", "UTF-8"]),
    ("latin1-encoding", lambda f, m: _train(f, train=_bytes(f, "t.csv", ("café,good\n" * 3).encode("latin-1"))),
     ["t.csv", "UTF-8"]),
    ("binary-file", lambda f, m: _train(f, train=_bytes(f, "t.csv", bytes(range(256)) * 40)), ["t.csv"]),
    ("ragged-csv-row", lambda f, m: _train(f, train=_csv(f, "t.csv", GOOD + "one,two,three\n")), ["t.csv", "line"]),
    ("broken-jsonl-line", lambda f, m: _train(f, train=_text(f, "t.jsonl", '{"text": "a", "label": "x"}\n{"text": \n')),
     ["t.jsonl", "line 2"]),
    ("bad-json-file", lambda f, m: _train(f, train=_text(f, "t.json", '[{"text": "a", "label": "x"},')), ["t.json"]),
    ("unknown-text-column", lambda f, m: _train(f, "text_column=body"), ["body", "text_column"]),
    ("unknown-label-column", lambda f, m: _train(f, "label_column=target"), ["target", "label_column"]),
    ("all-empty-labels", lambda f, m: _train(f, train=_csv(f, "t.csv", "text,label\n" + "some text,\n" * 8)),
     ["label"]),
    ("single-class", lambda f, m: _train(f, train=_csv(f, "t.csv", "text,label\n" + "a b,x\n" * 8)), ["single class"]),
    ("one-row", lambda f, m: _train(f, train=_csv(f, "t.csv", "text,label\nonly row,x\n")), ["t.csv"]),
    ("header-only", lambda f, m: _train(f, train=_csv(f, "t.csv", "text,label\n")), ["t.csv"]),
    ("empty-file", lambda f, m: _train(f, train=_csv(f, "t.csv", "")), ["t.csv"]),
    ("missing-train-file", lambda f, m: _train(f, train=f / "nope.csv"), ["nope.csv", "not found"]),
    ("unsupported-extension", lambda f, m: _train(f, train=_text(f, "t.xlsx", "x")), [".xlsx"]),
    ("absurd-max-length", lambda f, m: _train(f, "max_length=100000000", model=str(m)), ["max_length", "64"]),
    ("negative-learning-rate", lambda f, m: _train(f, "learning_rate=-0.1"), ["learning_rate", "positive"]),
    ("wrong-type", lambda f, m: _train(f, "num_train_epochs=three"), ["num_train_epochs"]),
    ("unknown-key", lambda f, m: _train(f, "lr=3e-5"), ["lr", "learning_rate"]),
    ("unknown-task", lambda f, m: _train(f, task="translation"), ["translation", "classification"]),
    ("steps-without-eval-steps", lambda f, m: _train(f, "eval_strategy=steps"), ["eval_steps"]),
    ("yaml-syntax-error", lambda f, m: ["train", str(_text(f, "run.yaml", "task: [classification\n"))], ["run.yaml"]),
    ("config-file-missing", lambda f, m: ["train", str(f / "missing.yaml")], ["missing.yaml"]),
    ("output-dir-is-a-file", lambda f, m: _train(f, f"output_dir={_text(f, 'afile', 'x')}"), ["output_dir"]),
    ("seq2seq-no-target-column", lambda f, m: _train(f, task="seq2seq", train=_text(
        f, "t.jsonl", '{"text": "a b c", "other": "x"}\n' * 4)), ["summary", "target_column"]),
    ("chat-without-messages", lambda f, m: _train(f, "data_format=chat", task="causal_lm", train=_text(
        f, "t.jsonl", '{"text": "hello"}\n' * 4)), ["messages"]),
    ("unknown-validation-label", lambda f, m: _train(f, "validation_file=" + str(_csv(f, "v.csv", UGLY))),
     ["v.csv", "ugly"]),
    ("not-a-run-folder", lambda f, m: ["predict", str(f), "--text", "hello"], ["run.json"]),
    ("truncated-safetensors", lambda f, m: _train(f, model=_model_with(m, f, _cut_safetensors)), ["model"]),
    ("unknown-model-type", lambda f, m: _train(f, model=_model_with(m, f, _unknown_model_type)),
     ["no-such-architecture"]),
    ("model-folder-missing", lambda f, m: _train(f, model=str(f / "no_model")), ["no_model", "not found"]),
]


def _text(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _bytes(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("argv_for", "words"), [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(argv_for, words, tiny_bert, tmp_path):
    argv = argv_for(tmp_path, tiny_bert)
    proc = subprocess.run([sys.executable, "-m", "tuneforge.cli", *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env={**__import__("os").environ, "TUNEFORGE_CACHE": str(tmp_path)})
    err = proc.stderr.strip()
    assert proc.returncode == 2, f"rc {proc.returncode}: {err[-2000:]}"
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]!r}"
    run = tmp_path / "run"
    if (run / "run.json").exists():
        assert json.loads((run / "run.json").read_text())["status"] != "finished"
    assert not (run / "model.safetensors").exists()
