"""Reliability: non-finite steps, signals, data order across resumes, crash safety, untrusted files."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from conftest import base_overrides
from safetensors.torch import load_file

import tuneforge
from tuneforge.engine.guards import GracefulStop, NonFiniteGuard
from tuneforge.errors import Diverged, Interrupted, UserError
from tuneforge.tasks.classification import ClassificationTask

SHORT = dict(max_steps=8, eval_strategy="no", load_best_model_at_end="false", per_device_train_batch_size=8,
             logging_steps=1, save_strategy="no")


def _poison(monkeypatch, bad_calls):
    """Make the classification loss NaN on the given (0-based) calls."""
    original = ClassificationTask.loss
    calls = {"n": 0}

    def loss(self, model, batch):
        value = original(self, model, batch)
        calls["n"] += 1
        return value * float("nan") if calls["n"] - 1 in bad_calls else value

    monkeypatch.setattr(ClassificationTask, "loss", loss)


def test_fused_adamw_skips_a_flagged_step_on_the_device():
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.AdamW([p], lr=0.1, fused=True)
    guard = NonFiniteGuard(patience=5)
    p.grad = torch.full((4,), float("nan"))
    guard.check(torch.tensor(float("nan")), torch.linalg.vector_norm(p.grad), opt)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(4)) and int(opt.state[p]["step"]) == 0  # nothing moved
    p.grad = torch.ones(4)
    guard.check(torch.tensor(1.0), torch.linalg.vector_norm(p.grad), opt)
    opt.step()
    assert (p.detach() < 1).all() and int(opt.state[p]["step"]) == 1
    assert guard.read() == (1, 1)


def test_nan_steps_are_skipped_and_logged(tiny_bert, toy_data, tmp_path, monkeypatch):
    _poison(monkeypatch, {2, 3})  # optimizer steps 3 and 4
    run = tuneforge.train(None, base_overrides(tiny_bert, toy_data, tmp_path / "run", **SHORT))
    lines = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    skipped = {r["step"]: r["skipped_steps"] for r in lines if "skipped_steps" in r}
    assert skipped == {3: 1, 4: 1}
    weights = load_file(run.path / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert run.info["status"] == "finished"


def test_a_run_of_nan_steps_stops_with_a_clear_error(tiny_bert, toy_data, tmp_path, monkeypatch):
    _poison(monkeypatch, set(range(2, 100)))
    out = tmp_path / "run"
    overrides = base_overrides(tiny_bert, toy_data, out, **{**SHORT, "max_steps": 20, "max_nonfinite_steps": 3,
                                                            "save_strategy": "steps", "save_steps": 1})
    with pytest.raises(Diverged, match=r"3 optimizer steps in a row .* last complete checkpoint: .*checkpoint-"):
        tuneforge.train(None, overrides)
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    assert not (out / "model.safetensors").exists()
    for ckpt in (out / "checkpoints").iterdir():  # skipped steps never wrote NaN weights
        assert all(torch.isfinite(v).all() for v in load_file(ckpt / "model.safetensors").values())


def test_sigterm_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tiny_bert, toy_data, tmp_path,
                                                                           monkeypatch, capsys):
    from tuneforge.cli import main

    common = dict(max_steps=10, eval_strategy="no", load_best_model_at_end="false", per_device_train_batch_size=8,
                  save_strategy="no", gradient_accumulation_steps=2)
    full = tuneforge.train(None, base_overrides(tiny_bert, toy_data, tmp_path / "full", **common))
    original = ClassificationTask.loss
    calls = {"n": 0}

    def loss(self, model, batch):  # the signal arrives in the middle of optimizer step 4
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, model, batch)

    monkeypatch.setattr(ClassificationTask, "loss", loss)
    cut = tmp_path / "cut"
    argv = ["train", *base_overrides(tiny_bert, toy_data, cut, **common)]
    assert main(argv) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "SIGTERM: stopped at step 4 of 10" in err and "--resume auto" in err
    assert json.loads((cut / "run.json").read_text())["status"] == "interrupted"
    assert (cut / "checkpoints" / "checkpoint-4" / "COMPLETE").exists()
    monkeypatch.setattr(ClassificationTask, "loss", original)
    assert main([*argv, "--resume", "auto"]) == 0
    a, b = load_file(full.path / "model.safetensors"), load_file(cut / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_second_sigint_aborts_at_once():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as a background job (nohup, &)
    with GracefulStop(lambda _: None) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored, whatever they were


def test_interrupted_exit_code_follows_the_signal():
    assert Interrupted("x", "SIGTERM").exit_code == 143 and Interrupted("x", "SIGINT").exit_code == 130


@pytest.mark.parametrize("resume_at", [5, 13])  # mid-epoch 0, and in epoch 2 (6 steps per epoch)
def test_resumed_runs_see_the_same_sample_ids(tiny_bert, toy_data, tmp_path, resume_at):
    common = dict(max_steps=16, eval_strategy="no", load_best_model_at_end="false", per_device_train_batch_size=8,
                  max_train_samples=48, save_strategy="steps", save_steps=1, save_total_limit="null",
                  record_sample_ids="true", train_sampling_strategy="random")
    full = tuneforge.train(None, base_overrides(tiny_bert, toy_data, tmp_path / "full", **common))
    records = [json.loads(x) for x in (full.path / "sample_ids.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 17))
    for epoch in range(2):  # every row exactly once per epoch
        ids = sorted(i for r in records[epoch * 6:(epoch + 1) * 6] for i in r["ids"])
        assert ids == list(range(48))
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copytree(full.path / "checkpoints" / f"checkpoint-{resume_at}",
                    cut / "checkpoints" / f"checkpoint-{resume_at}")
    shutil.copy(full.path / "run.json", cut / "run.json")
    # the crashed process had logged two more steps than its last checkpoint, the last one cut short
    lines = (full.path / "sample_ids.jsonl").read_text().splitlines()
    (cut / "sample_ids.jsonl").write_text("\n".join(lines[:resume_at + 2]) + "\n" + lines[resume_at + 2][:9])
    resumed = tuneforge.train(None, base_overrides(tiny_bert, toy_data, cut, resume_from_checkpoint="auto",
                                                   **common))
    assert (resumed.path / "sample_ids.jsonl").read_text() == (full.path / "sample_ids.jsonl").read_text()


def test_resume_auto_without_a_checkpoint_starts_from_scratch(tiny_bert, toy_data, tmp_path, capsys):
    from tuneforge.cli import main

    argv = ["train", *base_overrides(tiny_bert, toy_data, tmp_path / "run", **SHORT), "--resume", "auto"]
    assert main(argv) == 0
    assert "no complete checkpoint" in capsys.readouterr().out


def test_crafted_checkpoint_pickle_never_runs(tiny_bert, toy_data, tmp_path):
    out = tmp_path / "run"
    common = {**SHORT, "max_steps": 4, "save_strategy": "steps", "save_steps": 2}
    tuneforge.train(None, base_overrides(tiny_bert, toy_data, out, **common))
    ckpt = out / "checkpoints" / "checkpoint-4"
    marker = tmp_path / "pwned"
    _write_payload(ckpt / "optimizer.pt", marker)
    (out / "run.json").write_text(json.dumps({**json.loads((out / "run.json").read_text()), "status": "running"}))
    (out / "model.safetensors").unlink()
    with pytest.raises(UserError, match="not a plain-tensor file"):
        tuneforge.train(None, base_overrides(tiny_bert, toy_data, out, resume_from_checkpoint=str(ckpt), **common))
    assert not marker.exists()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_payload(path: Path, marker: Path) -> None:
    torch.save({"state": _Payload(marker)}, path)


def _model_copy(tiny_bert: Path, folder: Path) -> Path:
    shutil.copytree(tiny_bert, folder)
    return folder


def test_pickle_weights_are_refused_unless_allowed_and_payloads_never_run(tiny_bert, toy_data, tmp_path, capsys):
    from tuneforge.cli import main

    model = _model_copy(tiny_bert, tmp_path / "model")
    (model / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    _write_payload(model / "pytorch_model.bin", marker)
    argv = ["train", *base_overrides(model, toy_data, tmp_path / "run", **SHORT)]
    assert main(argv) == 2
    assert "only pickle weights (pytorch_model.bin)" in capsys.readouterr().err
    assert main([*argv[:-1], f"output_dir={tmp_path / 'run2'}", "--allow-pickle"]) == 2  # weights_only refuses it
    err = capsys.readouterr().err
    assert "was refused" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_genuine_pickle_weights_load_with_allow_pickle(tiny_bert, toy_data, tmp_path):
    model = _model_copy(tiny_bert, tmp_path / "model")
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    run = tuneforge.train(None, base_overrides(model, toy_data, tmp_path / "run", allow_pickle="true", **SHORT))
    assert run.info["status"] == "finished"


def test_symlink_out_of_the_model_folder_is_refused(tiny_bert, toy_data, tmp_path):
    model = _model_copy(tiny_bert, tmp_path / "model")
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(model / "model.safetensors", outside)
    (model / "model.safetensors").symlink_to(outside)
    with pytest.raises(UserError, match="links outside the model folder"):
        tuneforge.train(None, base_overrides(model, toy_data, tmp_path / "run", **SHORT))


def test_shard_index_traversal_is_refused(tiny_bert, toy_data, tmp_path):
    model = _model_copy(tiny_bert, tmp_path / "model")
    (model / "model.safetensors").unlink()
    (model / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"bert.embeddings.word_embeddings.weight": "../../etc/x.safetensors"}}))
    with pytest.raises(UserError, match="outside the model folder"):
        tuneforge.train(None, base_overrides(model, toy_data, tmp_path / "run", **SHORT))


def test_trust_remote_code_needs_a_pinned_commit_for_hub_models():
    from tuneforge.config import load_config

    base = ["task=classification", "train_file=t.csv", "trust_remote_code=true"]
    with pytest.raises(UserError, match="pin revision to a full commit hash"):
        load_config(None, [*base, "model_name_or_path=org/some-model"])
    load_config(None, [*base, "model_name_or_path=org/some-model", f"revision={'a' * 40}"])


def test_tokenizer_is_recorded_and_a_swapped_one_is_refused(trained_run, tmp_path):
    from tuneforge.inference import LoadedRun
    from tuneforge.runs.record import Run

    copy = tmp_path / "run"
    shutil.copytree(trained_run.path, copy)
    LoadedRun(Run(copy))  # the saved tokenizer is the training one
    spec = json.loads((copy / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = sorted(vocab)[-2:]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (copy / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match="differ from the tokenizer the model was trained with"):
        LoadedRun(Run(copy))


def test_a_tokenizer_from_another_model_is_an_error_but_added_tokens_grow(tiny_bert, tiny_gpt2_lm):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneforge.tasks.loading import fit_vocab

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    rows = model.get_input_embeddings().num_embeddings
    wrong = AutoTokenizer.from_pretrained(tiny_gpt2_lm)  # 400-token BPE vs a ~200-row table
    with pytest.raises(UserError, match="come from different models"):
        fit_vocab(model, wrong, "m")
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    tok.add_tokens(["<new>"])
    assert fit_vocab(model, tok, "m") == ["bert.embeddings.word_embeddings.weight"]
    assert model.get_input_embeddings().num_embeddings == rows + 1


@pytest.mark.parametrize("message", [
    "org/old does not appear to have a file named model.safetensors or model.safetensors.index.json",
    "Error no file named model.safetensors found in directory /x/old."])
def test_a_hub_model_without_safetensors_points_to_allow_pickle(message):
    from tuneforge.tasks.loading import _explain

    error = str(_explain(OSError(message), "org/old", "model"))
    assert "no safetensors weights" in error and "--allow-pickle" in error
