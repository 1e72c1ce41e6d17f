"""DeepSpeed ZeRO-2/3 driven by the engine, on the CPU: DeepSpeed's CPU accelerator over gloo on loopback, tiny
BERT (dropout 0), a few steps.

Under a launcher with 2 processes the session puts accelerate's state on DeepSpeed with the run's plugin
(accelerate 1.16 takes its DeepSpeed branch only off the CPU), so the engine takes the path a GPU run takes:
accelerate's DeepSpeed prepare, the engine stepped in the backward of each window's last micro-batch, DeepSpeed's
clipping, lockstep evaluation under ZeRO-3, gathered saves. These tests check that 2 processes under ZeRO-2 and
ZeRO-3 end with the weights of 1 process x batch 16 (at batch 8, and at 4 x accumulation 2, whose last window is
short), with optimizer step 3 poisoned (a NaN loss) in all three runs: DeepSpeed skips it as the guard skips it
under DDP, and the LR schedule goes on alike. They also check that every validation row is evaluated once (41
rows, evaluation batch 4: under ZeRO-3, with parameters released after each use, process 1 runs one stand-in
pass), that the folder loads with plain transformers, that a checkpoint holds a DDP checkpoint's files, and that
a ZeRO-3 checkpoint resumes under ZeRO-2 to the uninterrupted weights.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MP_TRAIN_ROWS, MP_VAL_ROWS, base_overrides, free_port, launcher_env, max_weight_diff

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                reason="deepspeed is not installed (make installs it: pip install --no-build-isolation "
                                       "deepspeed)")

BIN = Path(sys.executable).parent
TRAIN_ROWS, VAL_ROWS = MP_TRAIN_ROWS, MP_VAL_ROWS
COMMON = dict(num_train_epochs=2, per_device_eval_batch_size=4, use_cpu="true", mixed_precision="no",
              baselines="false", save_strategy="steps", save_steps=3, save_total_limit=10, logging_steps=1,
              load_best_model_at_end="false")  # the last weights: every step compared
# float round-off only: gradients averaged from two halves instead of one batch's sum, AdamW on partitions
# (measured: see docs/distributed.md "DeepSpeed")
WEIGHT_TOLERANCE = 1e-5
POISONED_STEP = 3
# `tuneforge train` with the classification loss NaN on call POISON_CALL of each process (the first micro-batch of
# optimizer step 3), as tests/test_reliability.py does in-process
POISON = """import os, sys
from tuneforge.cli import main
from tuneforge.tasks.classification import ClassificationTask
original, calls = ClassificationTask.loss, [0]
def loss(self, model, batch):
    calls[0] += 1
    value = original(self, model, batch)
    return value * float("nan") if calls[0] == int(os.environ["POISON_CALL"]) else value
ClassificationTask.loss = loss
sys.exit(main(["train", *sys.argv[1:]]))
"""


def _run(args: list[str], cwd: Path, poison_call: int | None = None, timeout: float = 300
         ) -> subprocess.CompletedProcess:
    program = ["-m", "tuneforge", "train"]
    if poison_call is not None:
        (cwd / "poison.py").write_text(POISON)
        program = [str(cwd / "poison.py")]
    cmd = [str(BIN / "torchrun"), "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "--nproc_per_node", "2", *program, *args]
    env = launcher_env() | {"DS_ACCELERATOR": "cpu", "POISON_CALL": str(poison_call)}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def data(mp_data) -> dict[str, Path]:
    return mp_data


def _overrides(model: Path, data: dict[str, Path], out: Path, **extra: object) -> list[str]:
    return base_overrides(model, data, out, **(COMMON | extra))


@pytest.fixture(scope="module")
def reference(no_dropout_bert, data, tmp_path_factory) -> Path:
    """One process, batch 16, DDP's (plain) path: the run the 2-process ZeRO runs must equal."""
    import tuneforge
    from tuneforge.tasks.classification import ClassificationTask

    out = tmp_path_factory.mktemp("ds_reference") / "one"
    original, calls = ClassificationTask.loss, [0]

    def loss(self, model, batch):  # one micro-batch per optimizer step: call 3 is step 3
        calls[0] += 1
        value = original(self, model, batch)
        return value * float("nan") if calls[0] == POISONED_STEP else value

    ClassificationTask.loss = loss
    try:
        return tuneforge.train(None, _overrides(no_dropout_bert, data, out, per_device_train_batch_size=16)).path
    finally:
        ClassificationTask.loss = original


def _zero(model: Path, data: dict[str, Path], out: Path, stage: int, *flags: str, poison_call: int | None = None,
          **extra: object) -> subprocess.CompletedProcess:
    return _run([*_overrides(model, data, out, **({"per_device_train_batch_size": 8, "strategy": "deepspeed",
                                                   "zero_stage": stage} | extra)), *flags], out.parent, poison_call)


@pytest.fixture(scope="module")
def zero2(no_dropout_bert, data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ds_zero2") / "run"
    return out, _zero(no_dropout_bert, data, out, 2, poison_call=POISONED_STEP)


@pytest.fixture(scope="module")
def zero3(no_dropout_bert, data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """ZeRO-3 at 4 x 2 processes x accumulation 2: DeepSpeed's window of 2, the last one of each epoch short.
    Parameters are released after every use (a passthrough file), as in a model too large to keep them, so every
    evaluation forward gathers from both processes and the stand-in pass is needed."""
    folder = tmp_path_factory.mktemp("ds_zero3")
    release = folder / "release.json"
    release.write_text(json.dumps({"zero_optimization": {"stage3_max_live_parameters": 0,
                                                         "stage3_max_reuse_distance": 0,
                                                         "stage3_param_persistence_threshold": 0}}))
    return folder / "run", _zero(no_dropout_bert, data, folder / "run", 3, per_device_train_batch_size=4,
                                 gradient_accumulation_steps=2, deepspeed_config=release,
                                 poison_call=2 * POISONED_STEP - 1)


def _check_run(run: Path, result: subprocess.CompletedProcess, reference: Path, stage: int, layout: str) -> float:
    assert result.stdout.count(f"deepspeed: ZeRO stage {stage} over 2 process(es)") == 1, result.stdout[-3000:]
    assert f"effective batch 16 = {layout}" in result.stdout
    diff = max_weight_diff(run, reference)
    assert max_weight_diff(run, run / "checkpoints" / "checkpoint-3") > 1e-4  # it trained after step 3
    metrics = json.loads((run / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    assert sum(map(sum, metrics["eval"]["confusion_matrix"])) == VAL_ROWS  # each validation row counted once
    assert metrics["eval"]["confusion_matrix"] == expected["eval"]["confusion_matrix"]
    assert metrics["eval"]["loss"] == pytest.approx(expected["eval"]["loss"], abs=1e-5)
    analysis = json.loads((run / "error_analysis.json").read_text())
    assert sum(s["rows"] for s in analysis["length_slices"]) == VAL_ROWS
    assert metrics["train"]["global_step"] == 14
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"]: r["skipped_steps"] for r in logged if "skipped_steps" in r} == {POISONED_STEP: 1}
    assert [r["learning_rate"] for r in logged if "learning_rate" in r] == \
        [r["learning_rate"] for r in map(json.loads, (reference / "metrics.jsonl").read_text().splitlines())
         if "learning_rate" in r]  # the schedule went on through the skipped step, as under DDP
    return diff


def test_zero2_on_two_processes_trains_the_weights_of_one(zero2, reference, no_dropout_bert):
    run, result = zero2
    diff = _check_run(run, result, reference, 2, "8 x 2 processes x 1")
    print(f"ZeRO-2, 2 processes x 8: max weight difference {diff:.2e} from 1 process x 16")
    assert diff < WEIGHT_TOLERANCE
    assert max_weight_diff(run, no_dropout_bert) > 1e-3  # it trained


def test_zero3_with_accumulation_trains_the_weights_of_one(zero3, reference):
    run, result = zero3
    diff = _check_run(run, result, reference, 3, "4 x 2 processes x 2")
    print(f"ZeRO-3, 2 processes x 4 x accumulation 2: max weight difference {diff:.2e} from 1 process x 16")
    assert diff < WEIGHT_TOLERANCE


def test_the_zero3_model_folder_loads_with_plain_transformers(zero3):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run, _ = zero3
    model = AutoModelForSequenceClassification.from_pretrained(run)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert json.loads((run / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    saved = load_file(run / "model.safetensors")
    assert max_weight_diff({k: v for k, v in model.state_dict().items() if k in saved}, saved) == 0.0
    tokens = AutoTokenizer.from_pretrained(run)(["good movie", "bad film"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert model(**tokens).logits.shape == (2, 2)


@pytest.mark.parametrize("which", ["zero2", "zero3"])
def test_a_zero_checkpoint_holds_what_a_ddp_one_holds(which, request, reference):
    """optimizer.pt keyed by parameter index in the same groups, full tensors, AdamW's moments and step equal to
    the 1-process run's at the same step (both runs trained the same weights and skipped step 3)."""
    import torch

    run, _ = request.getfixturevalue(which)
    ours, ddp = (torch.load(r / "checkpoints" / "checkpoint-6" / "optimizer.pt", weights_only=True)
                 for r in (run, reference))
    assert sorted(ours["state"]) == sorted(ddp["state"])
    assert [{k: v for k, v in g.items() if k != "params"} | {"n": len(g["params"])} for g in ours["param_groups"]] \
        == [{k: v for k, v in g.items() if k != "params"} | {"n": len(g["params"])} for g in ddp["param_groups"]]
    for i, state in ddp["state"].items():
        assert float(ours["state"][i]["step"]) == float(state["step"]) == 5.0  # the skipped step counts none
        for key in ("exp_avg", "exp_avg_sq"):
            assert type(ours["state"][i][key]) is torch.Tensor and ours["state"][i][key].shape == state[key].shape
            assert float((ours["state"][i][key] - state[key]).abs().max()) < 1e-6  # measured: 3e-8 and 3e-9


def test_a_zero3_checkpoint_resumes_under_zero2_to_the_uninterrupted_weights(zero3, no_dropout_bert, data,
                                                                             tmp_path):
    """checkpoint-6 of the ZeRO-3 run (4 x 2 processes x accumulation 2) resumed under ZeRO-2 at 8 x 2 processes
    (the files are DDP's, whatever the stage or layout): its checkpoint-12 equals the uninterrupted run's; with
    load_best_model_at_end the engine's model then takes the best checkpoint's weights (fp32 master copy too:
    the final save reads it)."""
    run, _ = zero3
    out = tmp_path / "run"
    shutil.copytree(run / "checkpoints" / "checkpoint-6", out / "checkpoints" / "checkpoint-6")
    result = _zero(no_dropout_bert, data, out, 2, "--resume", "auto", load_best_model_at_end="true")
    assert "resumed from" in result.stdout and "checkpoint-6" in result.stdout
    assert "deepspeed: ZeRO stage 2 over 2 process(es), window 1 micro-batch(es) of 8" in result.stdout
    diff = max_weight_diff(out / "checkpoints" / "checkpoint-12", run / "checkpoints" / "checkpoint-12")
    print(f"ZeRO-3 checkpoint resumed under ZeRO-2: max weight difference {diff:.2e} from the uninterrupted run")
    assert diff < WEIGHT_TOLERANCE
    assert max_weight_diff(out / "checkpoints" / "checkpoint-12", out / "checkpoints" / "checkpoint-6") > 1e-4
    best = json.loads((out / "metrics.json").read_text())["best_step"]
    assert best == 7 and "restored the best model (step 7" in result.stdout  # f1 did not improve at step 14
    assert max_weight_diff(out, out / "checkpoints" / "checkpoint-7") == 0.0
    assert max_weight_diff(out, run) > 1e-4
