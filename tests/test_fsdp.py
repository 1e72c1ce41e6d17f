"""FSDP2 driven by the engine, on the CPU: gloo on loopback, tiny BERT (dropout 0), a few steps.

CPU FSDP is a supported feature (docs/distributed.md, "Strategies"): under a launcher with 2 or more processes
the session puts accelerate's state on FSDP with the run's plugin (accelerate 1.15 applies it only to GPU
groups), so the engine takes the same path as on a GPU: accelerate's FSDP2 prepare, no_sync, DTensor clipping,
lockstep evaluation, gathered saves. These tests check that 2 processes x batch 8 under FSDP2 end with the weights
of 1 process x batch 16, evaluate every validation row once (41 rows, evaluation batch 4: 6 batches on process 0,
5 on process 1, so process 1 runs one stand-in pass), save a folder plain transformers loads, and that an FSDP2
checkpoint resumes on 2 processes (FSDP2) and on 1 (the same files as a DDP checkpoint). LoRA under FSDP2 trains
the adapters and head of 1 process x batch 16, leaves the base weights frozen, writes a 1-process LoRA run's
folder and resumes from its adapter checkpoints.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    MP_TRAIN_ROWS,
    MP_VAL_ROWS,
    base_overrides,
    free_port,
    launcher_env,
    max_weight_diff,
    one_line_error,
)
from safetensors.torch import load_file

BIN = Path(sys.executable).parent
TRAIN_ROWS, VAL_ROWS = MP_TRAIN_ROWS, MP_VAL_ROWS
COMMON = dict(num_train_epochs=2, per_device_eval_batch_size=8, use_cpu="true", mixed_precision="no",
              baselines="false", save_strategy="steps", save_steps=2, save_total_limit=10, logging_steps=1,
              load_best_model_at_end="false")  # the last weights: every step compared
# float round-off only: gradients reduce-scattered from two halves instead of one batch's sum, AdamW on shards
# (measured: see docs/distributed.md "Measured")
WEIGHT_TOLERANCE = 1e-5
SHARDED = "fsdp: parameters sharded over 2 process(es)"




def _torchrun(*args: str) -> list[str]:
    return [str(BIN / "torchrun"), "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
            "--nproc_per_node", "2", "-m", "tuneforge", "train", *args]


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=launcher_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")




@pytest.fixture(scope="module")
def data(mp_data) -> dict[str, Path]:
    return mp_data


def _overrides(model: Path, data: dict[str, Path], out: Path, **extra: object) -> list[str]:
    return base_overrides(model, data, out, **(COMMON | extra))


@pytest.fixture(scope="module")
def reference(no_dropout_bert, data, tmp_path_factory) -> Path:
    """One process, batch 16, DDP's (plain) path: the run the 2-process FSDP2 run must equal."""
    import tuneforge

    out = tmp_path_factory.mktemp("fsdp_reference") / "one"
    return tuneforge.train(None, _overrides(no_dropout_bert, data, out, per_device_train_batch_size=16)).path


def _resumed_on_one_process(run: Path, model: Path, data: dict[str, Path], tmp_path: Path) -> float:
    """`run`'s checkpoint-6 resumed by one plain process at 8 x accumulation 2 (elastic 2 -> 1): the largest
    difference of its final weights from `run`'s."""
    import tuneforge

    out = tmp_path / "run"
    shutil.copytree(run / "checkpoints" / "checkpoint-6", out / "checkpoints" / "checkpoint-6")
    resumed = tuneforge.train(None, _overrides(model, data, out, per_device_train_batch_size=8,
                                               resume_from_checkpoint=out / "checkpoints" / "checkpoint-6"))
    return max_weight_diff(resumed.path, run)


def _fsdp(model: Path, data: dict[str, Path], out: Path, *flags: str, **extra: object) -> subprocess.CompletedProcess:
    return _run(_torchrun(*_overrides(model, data, out, **({"per_device_train_batch_size": 8, "strategy": "fsdp",
                                                            "per_device_eval_batch_size": 4} | extra)), *flags),
                cwd=out.parent)


@pytest.fixture(scope="module")
def fsdp_run(no_dropout_bert, data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """2 processes x batch 8 under FSDP2, every checkpoint kept."""
    out = tmp_path_factory.mktemp("fsdp_two") / "run"
    return out, _fsdp(no_dropout_bert, data, out)


def test_two_fsdp_processes_train_the_weights_of_one(fsdp_run, reference, no_dropout_bert):
    run, result = fsdp_run
    assert result.stdout.count(SHARDED) == 1, result.stdout[-3000:]  # sharded, not a quiet DDP, and said once
    assert "effective batch 16 = 8 x 2 processes x 1" in result.stdout
    diff = max_weight_diff(run, reference)
    print(f"FSDP2, 2 processes: max weight difference {diff:.2e} from 1 process")
    assert diff < WEIGHT_TOLERANCE
    assert max_weight_diff(run, no_dropout_bert) > 1e-3  # it trained
    metrics = json.loads((run / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    assert sum(map(sum, metrics["eval"]["confusion_matrix"])) == VAL_ROWS  # each validation row counted once
    assert metrics["eval"]["confusion_matrix"] == expected["eval"]["confusion_matrix"]
    assert metrics["eval"]["loss"] == pytest.approx(expected["eval"]["loss"], abs=1e-5)
    analysis = json.loads((run / "error_analysis.json").read_text())
    assert sum(s["rows"] for s in analysis["length_slices"]) == VAL_ROWS
    assert metrics["train"]["global_step"] == 14
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_the_fsdp_model_folder_loads_with_plain_transformers(fsdp_run):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run, _ = fsdp_run
    model = AutoModelForSequenceClassification.from_pretrained(run)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert json.loads((run / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    saved = _weights(run)
    assert max_weight_diff({k: v for k, v in model.state_dict().items() if k in saved}, saved) == 0.0
    tokens = AutoTokenizer.from_pretrained(run)(["good movie", "bad film"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert model(**tokens).logits.shape == (2, 2)
    # the checkpoint holds what a DDP one holds: the optimizer state keyed by parameter index, full tensors
    optimizer = torch.load(run / "checkpoints" / "checkpoint-6" / "optimizer.pt", weights_only=True)
    n = len(saved)
    assert sorted(optimizer["state"]) == list(range(n)) and type(optimizer["state"][0]["exp_avg"]) is torch.Tensor
    assert optimizer["state"][0]["exp_avg"].shape == saved["bert.embeddings.word_embeddings.weight"].shape


def test_an_fsdp_checkpoint_resumes_on_two_processes(fsdp_run, no_dropout_bert, data, tmp_path):
    """checkpoint-6 of the FSDP2 run, resumed under FSDP2 on 2 processes at per-device batch 4 (elastic: 4 x 2
    processes x accumulation 2, so FSDP2's gradient sync is held off for the first micro-batch of each window),
    trains the uninterrupted weights (its checkpoint-14); with load_best_model_at_end the sharded model then
    takes the best checkpoint's weights."""
    run, _ = fsdp_run
    out = tmp_path / "run"
    shutil.copytree(run / "checkpoints" / "checkpoint-6", out / "checkpoints" / "checkpoint-6")
    result = _fsdp(no_dropout_bert, data, out, "--resume", "auto", load_best_model_at_end="true",
                   per_device_train_batch_size=4)
    assert "resumed from" in result.stdout and "checkpoint-6" in result.stdout and SHARDED in result.stdout
    assert "kept as 4 x 2 process(es) x 2 accumulation" in result.stdout
    last = out / "checkpoints" / "checkpoint-14"
    diff = max_weight_diff(last, run)
    print(f"FSDP2 resumed on 2 processes x 4 x accumulation 2: max weight difference {diff:.2e} from the "
          "uninterrupted run")
    assert diff < WEIGHT_TOLERANCE
    assert max_weight_diff(last, run / "checkpoints" / "checkpoint-6") > 1e-4  # the 8 steps after it trained
    best = json.loads((out / "metrics.json").read_text())["best_step"]
    assert best == 7 and "restored the best model (step 7" in result.stdout  # f1 did not improve at step 14
    assert max_weight_diff(out, out / "checkpoints" / "checkpoint-7") == 0.0
    assert max_weight_diff(out, last) > 1e-4


def test_an_fsdp_checkpoint_resumes_on_one_process(fsdp_run, no_dropout_bert, data, tmp_path):
    """The same checkpoint resumed by one plain process (elastic resume 2 -> 1, 8 x accumulation 2): the files
    are a DDP checkpoint's, and the run ends with the uninterrupted FSDP2 weights."""

    run, _ = fsdp_run
    diff = _resumed_on_one_process(run, no_dropout_bert, data, tmp_path)
    print(f"FSDP2 checkpoint resumed on 1 process: max weight difference {diff:.2e}")
    assert diff < WEIGHT_TOLERANCE


def test_fsdp_on_one_cpu_process_is_refused_in_one_line(capsys, tiny_bert, data, tmp_path):
    line = one_line_error(capsys, ["train", *base_overrides(tiny_bert, data, tmp_path / "run", strategy="fsdp",
                                                            use_cpu="true")])
    assert "fsdp on the CPU shards over the processes of a launcher, 2 or more" in line and "--nproc 2" in line


def test_an_fsdp_state_left_by_an_earlier_session_is_rebuilt(monkeypatch):
    """accelerate keeps one state per process: a session whose strategy differs from the state's (FSDP left by
    an earlier fsdp session, or a DDP state an fsdp session would quietly keep) rebuilds it (engine/session.py)."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    from tuneforge.engine.fsdp import forget_fsdp

    monkeypatch.setattr(PartialState, "_shared_state", {"distributed_type": DistributedType.FSDP, "_cpu": True})
    monkeypatch.setattr(AcceleratorState, "_shared_state", {"distributed_type": DistributedType.FSDP})
    assert forget_fsdp(True, cuda=False) is False  # another fsdp session keeps it
    assert forget_fsdp(False, cuda=False) is True  # a DDP session after an FSDP one: the group's own type back
    assert PartialState._shared_state["distributed_type"] == DistributedType.MULTI_CPU
    monkeypatch.setattr(AcceleratorState, "_shared_state", {"distributed_type": DistributedType.MULTI_GPU})
    assert forget_fsdp(True, cuda=True) is True and forget_fsdp(False, cuda=True) is False
    monkeypatch.setattr(AcceleratorState, "_shared_state", {})
    assert forget_fsdp(True, cuda=False) is False  # nothing built yet


LORA = {"lora.enabled": "true", "lora.r": 4, "lora.lora_dropout": 0.0, "learning_rate": 1e-2}


def _adapter(folder: Path) -> dict:
    return load_file(folder / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def lora_runs(no_dropout_bert, data, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """LoRA (rank 4, no dropout; BERT's default targets query and value, the new head trained in full): 1 process
    x batch 16, and 2 processes x batch 8 under FSDP2."""
    import tuneforge

    folder = tmp_path_factory.mktemp("fsdp_lora")
    one = tuneforge.train(None, _overrides(no_dropout_bert, data, folder / "one", per_device_train_batch_size=16,
                                           **LORA)).path
    return one, folder / "two", _fsdp(no_dropout_bert, data, folder / "two", **LORA)


def test_lora_under_fsdp_trains_the_adapters_of_one_process(lora_runs, no_dropout_bert):
    """The adapters and the head end equal to the 1-process run's, the base weights stay the pretrained ones, and
    the run folder is a 1-process LoRA run's: adapter/ for peft, merged weights for plain transformers."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    one, two, result = lora_runs
    assert result.stdout.count(SHARDED) == 1, result.stdout[-3000:]
    assert sorted(p.name for p in two.iterdir() if p.suffix != ".json" or p.name == "config.json") == \
        sorted(p.name for p in one.iterdir() if p.suffix != ".json" or p.name == "config.json")
    assert sorted(p.name for p in (two / "adapter").iterdir()) == sorted(p.name for p in (one / "adapter").iterdir())
    adapter = _adapter(two)
    assert any("lora_B" in k for k in adapter) and any("classifier" in k for k in adapter)
    diff = max_weight_diff(adapter, _adapter(one))
    merged = max_weight_diff(two, one)
    print(f"FSDP2 LoRA, 2 processes: max adapter/head difference {diff:.2e}, merged weights {merged:.2e} "
          "from 1 process")
    assert diff < WEIGHT_TOLERANCE and merged < WEIGHT_TOLERANCE
    assert max(float(v.abs().max()) for k, v in adapter.items() if "lora_B" in k) > 1e-3  # the adapters trained
    # the base weights stayed frozen: every weight LoRA does not target is the pretrained one, bit for bit
    base = _weights(no_dropout_bert)
    untouched = [k for k in base if "query" not in k and "value" not in k and "classifier" not in k]
    assert untouched and all(torch.equal(_weights(two)[k], base[k]) for k in untouched)
    for step in (6, 14):  # a checkpoint holds the adapter files, as a 1-process LoRA checkpoint does
        ckpt = two / "checkpoints" / f"checkpoint-{step}"
        assert (ckpt / "adapter_model.safetensors").exists() and not (ckpt / "model.safetensors").exists()
    assert max_weight_diff(load_file(two / "checkpoints" / "checkpoint-14" / "adapter_model.safetensors"),
                           adapter) == 0.0
    # loadable as tests/test_lora.py loads a LoRA run: peft over the pretrained base, and plain transformers
    adapted = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(no_dropout_bert),
                                        two / "adapter").eval()
    plain_model = AutoModelForSequenceClassification.from_pretrained(two).eval()
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 7, 3]])}
    with torch.no_grad():
        torch.testing.assert_close(plain_model(**inputs).logits, adapted(**inputs).logits, atol=1e-4, rtol=1e-4)


def test_a_lora_checkpoint_resumes_under_fsdp(lora_runs, no_dropout_bert, data, tmp_path):
    """checkpoint-6 of the FSDP2 LoRA run (adapter files) resumed under FSDP2 at 4 x 2 processes x accumulation 2
    trains the uninterrupted adapters (its checkpoint-14); load_best_model_at_end then puts checkpoint-7's
    adapter into the sharded model, and the final save writes exactly that adapter."""
    _, run, _ = lora_runs
    out = tmp_path / "run"
    shutil.copytree(run / "checkpoints" / "checkpoint-6", out / "checkpoints" / "checkpoint-6")
    result = _fsdp(no_dropout_bert, data, out, "--resume", "auto", load_best_model_at_end="true",
                   per_device_train_batch_size=4, **LORA)
    assert "resumed from" in result.stdout and SHARDED in result.stdout
    file = "adapter_model.safetensors"
    last, uninterrupted = (load_file(r / "checkpoints" / "checkpoint-14" / file) for r in (out, run))
    diff = max_weight_diff(last, uninterrupted)
    print(f"FSDP2 LoRA resumed on 2 processes x 4 x accumulation 2: max adapter difference {diff:.2e}")
    assert diff < WEIGHT_TOLERANCE
    assert max_weight_diff(last, load_file(run / "checkpoints" / "checkpoint-6" / file)) > 1e-4  # it trained on
    best = json.loads((out / "metrics.json").read_text())["best_step"]
    assert "restored the best model" in result.stdout and best != 14
    assert max_weight_diff(_adapter(out), load_file(out / "checkpoints" / f"checkpoint-{best}" / file)) == 0.0


# ---- sharded checkpoints (distributed.sharded_checkpoints: DCP shards written by every process) -------------------

def _shard_weights(checkpoint: Path, like: Path) -> dict:
    """A sharded checkpoint's weights read in this (plain, unlaunched) process: DCP on no process group fills a
    plain model's full tensors from both processes' files."""
    from transformers import AutoModelForSequenceClassification

    from tuneforge.engine.dcp import load_shards

    model = AutoModelForSequenceClassification.from_pretrained(like)
    load_shards(checkpoint, model, None)
    return {k: v for k, v in model.state_dict().items() if k in _weights(like)}


@pytest.fixture(scope="module")
def sharded_run(no_dropout_bert, data, tmp_path_factory) -> Path:
    """The FSDP2 run of fsdp_run (2 processes x batch 8), its checkpoints written as DCP shards."""
    out = tmp_path_factory.mktemp("fsdp_sharded") / "run"
    result = _fsdp(no_dropout_bert, data, out, sharded_checkpoints="true")
    assert result.stdout.count(SHARDED) == 1, result.stdout[-3000:]
    return out


def test_sharded_checkpoints_hold_one_shard_file_per_process(sharded_run, fsdp_run):
    """Each checkpoint holds a DCP folder (one .distcp per process, no gathered weights or optimizer file) beside
    the usual run-state and RNG files; the training equals the gathered-checkpoint run's, and the final folder is
    still plain safetensors that from_pretrained loads."""
    from transformers import AutoModelForSequenceClassification

    from tuneforge.engine.dcp import holds_shards, shard_files

    ckpt = sharded_run / "checkpoints" / "checkpoint-6"
    assert holds_shards(ckpt) and shard_files(ckpt) == ["__0_0.distcp", "__1_0.distcp"]
    names = {p.name for p in ckpt.iterdir()}
    assert not names & {"model.safetensors", "optimizer.pt"}, names
    assert {"rng_state.pt", "rng_state_1.pt", "scheduler.pt", "trainer_state.json", "COMPLETE",
            "config.json"} <= names
    assert not list((sharded_run / "checkpoints").glob(".tmp-*"))  # renamed into place
    diff = max_weight_diff(sharded_run, fsdp_run[0])
    print(f"FSDP2 with sharded checkpoints: max weight difference {diff:.2e} from the gathered-checkpoint run")
    assert diff < WEIGHT_TOLERANCE
    model = AutoModelForSequenceClassification.from_pretrained(sharded_run)
    assert type(model).__name__ == "BertForSequenceClassification"
    # the last checkpoint's shards hold the final weights (load_best_model_at_end off)
    last = _shard_weights(sharded_run / "checkpoints" / "checkpoint-14", sharded_run)
    assert max_weight_diff(last, _weights(sharded_run)) == 0.0


def test_a_sharded_checkpoint_resumes_on_two_fsdp_processes(sharded_run, no_dropout_bert, data, tmp_path):
    """checkpoint-6's shards resumed under FSDP2 on 2 processes train the uninterrupted weights (its final
    folder, step 14); load_best_model_at_end then restores the best checkpoint's shards."""
    out = tmp_path / "run"
    shutil.copytree(sharded_run / "checkpoints" / "checkpoint-6", out / "checkpoints" / "checkpoint-6")
    result = _fsdp(no_dropout_bert, data, out, "--resume", "auto", sharded_checkpoints="true",
                   load_best_model_at_end="true")
    assert "resumed from" in result.stdout and "checkpoint-6" in result.stdout and SHARDED in result.stdout
    last = _shard_weights(out / "checkpoints" / "checkpoint-14", out)
    diff = max_weight_diff(last, _weights(sharded_run))
    print(f"sharded checkpoint resumed on 2 FSDP2 processes: max weight difference {diff:.2e} from the "
          "uninterrupted run")
    assert diff < WEIGHT_TOLERANCE
    assert max_weight_diff(last, _shard_weights(out / "checkpoints" / "checkpoint-6", out)) > 1e-4  # it trained
    best = json.loads((out / "metrics.json").read_text())["best_step"]
    assert best != 14 and f"restored the best model (step {best}" in result.stdout
    assert max_weight_diff(out, _shard_weights(out / "checkpoints" / f"checkpoint-{best}", out)) == 0.0


def test_a_sharded_checkpoint_resumes_on_one_plain_process(sharded_run, no_dropout_bert, data, tmp_path):
    """The same shards resumed by one plain process without a process group (elastic 2 -> 1, 8 x accumulation
    2): DCP reads full tensors from both processes' files; the run ends with the uninterrupted weights."""

    diff = _resumed_on_one_process(sharded_run, no_dropout_bert, data, tmp_path)
    print(f"sharded checkpoint resumed on 1 plain process: max weight difference {diff:.2e}")
    assert diff < WEIGHT_TOLERANCE


def test_sharded_checkpoints_without_fsdp_or_with_lora_are_refused_in_one_line(capsys, tiny_bert, data, tmp_path):
    from tuneforge.config import load_config
    from tuneforge.engine.strategy import check_run
    from tuneforge.errors import UserError

    line = one_line_error(capsys, ["train", *base_overrides(tiny_bert, data, tmp_path / "run",
                                                            sharded_checkpoints="true", use_cpu="true")])
    assert "distributed.sharded_checkpoints: applies to strategy=fsdp" in line and "ddp" in line
    cfg = load_config(None, ["task=classification", "model_name_or_path=m", "train_file=t.csv", "strategy=fsdp",
                             "sharded_checkpoints=true", "lora.enabled=true"])
    with pytest.raises(UserError) as err:
        check_run(cfg, "cpu", {"LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    assert str(err.value).startswith("distributed.sharded_checkpoints: not built with lora.enabled")
    assert "\n" not in str(err.value)
