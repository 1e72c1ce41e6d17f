"""The run registry (list, show, compare, silent-death detection, lineage) and the curated hub upload."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import one_line_error

import tuneforge
from tuneforge.cli import main
from tuneforge.runs.liveness import HEARTBEAT, STALE_SECONDS, effective_status

EXPECTED_UPLOAD = ["README.md", "config.json", "model.safetensors", "run_config.yaml", "tokenizer.json",
                   "tokenizer_config.json"]


@pytest.fixture(scope="module")
def continued_run(trained_run, toy_data, tmp_path_factory):
    """A second, short run continued from the first run's folder, at another learning rate, pushed to a
    (faked) hub: it has a parent, differs in learning_rate, and exercises push_to_hub at the end of training."""
    from huggingface_hub import HfApi

    uploads = []
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_TOKEN", "hf_test_token_not_real")
    patch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: _RepoUrl(repo_id))
    patch.setattr(HfApi, "upload_folder", lambda self, **kw: uploads.append(_listing(kw["folder_path"])))
    out = tmp_path_factory.mktemp("runs2") / "continued"
    try:
        run = tuneforge.train(None, [
            "task=classification", f"model_name_or_path={trained_run.path}", f"train_file={toy_data['train']}",
            f"validation_file={toy_data['validation']}", f"output_dir={out}", "learning_rate=1e-3",
            "num_train_epochs=1", "report_to=none", "seed=0", "push_to_hub=true", "hub_model_id=me/toy",
            f"preprocessing_cache_dir={out.parent / 'cache'}"])
    finally:
        patch.undo()
    return run, uploads


class _RepoUrl(str):
    def __new__(cls, repo_id: str):
        obj = super().__new__(cls, f"https://huggingface.co/{repo_id}")
        obj.repo_id = repo_id
        return obj


def _listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


def _fake_run(root, name, **info):
    folder = root / name
    folder.mkdir(parents=True)
    record = {"id": name, "created_at": "2026-01-01T00:00:00+00:00", "task": "classification", "status": "running",
              "base_model": "bert-base-uncased", "updated_at": "2026-01-01T00:00:00+00:00", **info}
    (folder / "run.json").write_text(json.dumps(record))
    (folder / "run_config.yaml").write_text("task: classification\n")
    return folder


def test_continued_run_records_parent_and_pushes_only_the_curated_files(continued_run, trained_run):
    run, uploads = continued_run
    assert run.info["parent"]["id"] == trained_run.info["id"]
    assert uploads == [EXPECTED_UPLOAD]  # no checkpoints/, logs, optimizer state or error analysis
    assert (run.path / "error_analysis.json").exists() and (run.path / "checkpoints").is_dir()
    assert not list(run.path.glob(".hub-upload-*"))  # the staging folder is removed


def test_runs_compare_shows_learning_rate_difference_and_metric_delta(continued_run, trained_run, capsys,
                                                                      monkeypatch):
    run, _ = continued_run
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["runs", "compare", str(trained_run.path), str(run.path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "training.learning_rate" in line)
    assert "0.003" in row and "0.001" in row
    a, b = trained_run.metrics["eval"]["f1_macro"], run.metrics["eval"]["f1_macro"]
    row = next(line for line in out.splitlines() if "eval.f1_macro" in line)
    assert f"({b - a:+.4g})" in row


def test_runs_list_filters_and_shows_parent(continued_run, trained_run, capsys, monkeypatch):
    run, _ = continued_run
    monkeypatch.setenv("COLUMNS", "400")
    root = run.path.parent
    shutil.copytree(trained_run.path, root / "first", ignore=shutil.ignore_patterns("checkpoints", "*.safetensors"))
    assert main(["runs", "list", "--root", str(root), "--status", "finished"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "continued" in line)
    assert "finished" in line and trained_run.info["id"] in line  # the parent column
    assert main(["runs", "list", "--root", str(root), "--task", "seq2seq"]) == 0
    assert "0 runs" in capsys.readouterr().out


def test_silently_dead_runs_show_as_interrupted(tmp_path, capsys, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    _fake_run(tmp_path, "dead-pid", pid=dead.pid, host=host)
    stale = _fake_run(tmp_path, "stale-elsewhere", pid=1, host="another-host")
    os.utime(stale / "run.json", (0, 0))
    alive = _fake_run(tmp_path, "alive", pid=os.getpid(), host=host)
    (alive / HEARTBEAT).write_text("now")
    statuses = {p.name: effective_status(p, json.loads((p / "run.json").read_text())) for p in tmp_path.iterdir()}
    assert statuses == {"dead-pid": "interrupted", "stale-elsewhere": "interrupted", "alive": "running"}
    # the alive run stops counting as alive once its heartbeat is older than the limit
    old = time.time() - STALE_SECONDS - 5
    os.utime(alive / HEARTBEAT, (old, old))
    assert effective_status(alive, json.loads((alive / "run.json").read_text())) == "interrupted"
    (alive / HEARTBEAT).write_text("beat again")
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["runs", "list", "--root", str(tmp_path), "--status", "interrupted"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 runs") and "dead-pid" in out and "stale-elsewhere" in out and "alive" not in out


def test_runs_show_prints_record_and_metrics(trained_run, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["runs", "show", str(trained_run.path)]) == 0
    out = capsys.readouterr().out
    assert trained_run.info["data_fingerprint"] in out and "majority_class" in out and "learning_rate: 0.003" in out


def test_push_without_token_is_one_line(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no cached login either
    line = one_line_error(capsys, ["push", str(trained_run.path)])
    assert "HF_TOKEN" in line


def test_report_to_missing_package_fails_before_training(tiny_bert, toy_data, tmp_path, capsys):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    line = one_line_error(capsys, ["train", "task=classification", f"model_name_or_path={tiny_bert}",
                                   f"train_file={toy_data['train']}", f"output_dir={tmp_path / 'r'}",
                                   "report_to=wandb"])
    assert "pip install wandb" in line
    assert not (tmp_path / "r").exists()


def test_one_resolver_for_every_command(tmp_path, capsys, monkeypatch):
    """predict/evaluate/export/serve/report and `runs show` read a run reference by the same rules: path, id,
    unique id prefix, unique id part; ambiguity and unfinished runs are one-line errors."""
    from tuneforge.errors import UserError
    from tuneforge.runs.record import resolve

    root = tmp_path / "runs"
    root.mkdir()
    for name, status in (("20260101-000000-classification-bert", "finished"),
                         ("20260102-000000-classification-roberta", "finished"),
                         ("20260103-000000-seq2seq-t5", "running"), ("bert-tiny", "finished")):
        _fake_run(root, name, pid=1, host="another-host", status=status)
    assert resolve(root / "20260101-000000-classification-bert", root).path.name.endswith("-bert")
    assert resolve("20260101-000000-classification-bert", root).path.name.endswith("-bert")  # an id
    assert resolve("20260102", root).path.name.endswith("-roberta")  # a unique prefix
    assert resolve("roberta", root).path.name.endswith("-roberta")  # a unique part
    assert resolve("bert", root).path.name == "bert-tiny"  # three ids contain it, one starts with it
    with pytest.raises(UserError, match=r"matches 2 runs .*classification-bert.*classification-roberta"):
        resolve("classification", root)  # no id starts with it, two contain it
    with pytest.raises(UserError, match="not finished"):
        resolve("t5", root)
    assert resolve("t5", root, require=None).path.name.endswith("-t5")  # `runs show` takes any status
    with pytest.raises(UserError, match="names no run"):
        resolve("gpt2", root)
    monkeypatch.chdir(tmp_path)  # the default root is ./runs, for every command
    assert resolve("roberta").path == Path("runs") / "20260102-000000-classification-roberta"
    assert main(["runs", "show", "t5"]) == 0 and "seq2seq-t5" in capsys.readouterr().out  # any status
    assert "matches 2 runs" in one_line_error(capsys, ["report", "classification"])
    assert "not finished" in one_line_error(capsys, ["predict", "t5", "--text", "hi"])
