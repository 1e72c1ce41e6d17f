"""Multi-process training (DDP) on the CPU: gloo on loopback, tiny BERT, a few steps.

2 processes x batch 8 must end with the weights of 1 process x batch 16 (dropout 0: masks differ per process),
in one run folder, with validation metrics over every example exactly once (41 rows: odd); the same through
`tuneforge train --nproc 2` and a simulated 2-node run (two torchrun invocations on loopback); kill -9 of a
2-process run and `--resume auto` equals the uninterrupted run (dropout on, so every process's RNG matters).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
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

BIN = Path(sys.executable).parent
TRAIN_ROWS, VAL_ROWS = MP_TRAIN_ROWS, MP_VAL_ROWS
COMMON = dict(num_train_epochs=2, per_device_eval_batch_size=8, use_cpu="true", mixed_precision="no",
              baselines="false", save_strategy="steps", save_steps=2, save_total_limit=2, logging_steps=1,
              load_best_model_at_end="false")  # the last weights: every step compared
# float round-off only: summing two halves' gradients instead of one batch's (measured: 3.9e-7 after 14 steps)
WEIGHT_TOLERANCE = 1e-5




# `tuneforge ...` whose last atexit hook (registered first, so run last) says whether the process group was still
# alive: a process ending with gloo's group alive can abort in finalization (engine/distributed.py release_at_exit)
EXIT_PROBE = """import atexit, sys
import torch.distributed as dist
from tuneforge.cli import main
atexit.register(lambda: print("process group at exit:", "alive" if dist.is_initialized() else "destroyed", flush=True))
sys.exit(main(sys.argv[1:]))
"""


def _torchrun(*args: str) -> list[str]:
    return [str(BIN / "torchrun"), "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=launcher_env(), capture_output=True, text=True, timeout=timeout)




@pytest.fixture(scope="module")
def data(mp_data) -> dict[str, Path]:
    return mp_data


def _overrides(model: Path, data: dict[str, Path], out: Path, **extra: object) -> list[str]:
    items = base_overrides(model, data, out, **(COMMON | extra))
    return [i for i in items if not i.startswith("output_dir=")] if out.name == "-" else items


@pytest.fixture(scope="module")
def reference(no_dropout_bert, data, tmp_path_factory) -> Path:
    """One process, batch 16: the run every 2-process run at global batch 16 must equal."""
    import tuneforge

    out = tmp_path_factory.mktemp("ddp_reference") / "one"
    return tuneforge.train(None, _overrides(no_dropout_bert, data, out, per_device_train_batch_size=16)).path


def _assert_all_examples_once(run: Path, reference: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    assert sum(map(sum, metrics["eval"]["confusion_matrix"])) == VAL_ROWS  # each validation row counted once
    assert metrics["eval"]["confusion_matrix"] == expected["eval"]["confusion_matrix"]
    assert metrics["eval"]["loss"] == pytest.approx(expected["eval"]["loss"], abs=1e-6)
    analysis = json.loads((run / "error_analysis.json").read_text())
    assert sum(s["rows"] for s in analysis["length_slices"]) == VAL_ROWS
    assert metrics["train"]["global_step"] == expected["train"]["global_step"] == 14


@pytest.fixture(scope="module")
def ddp_run(no_dropout_bert, data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """2 processes x batch 8 under torchrun, without output_dir (rank 0 picks the folder), every checkpoint kept;
    each process says at its very end whether its process group was still alive."""
    folder = tmp_path_factory.mktemp("ddp_two")
    (folder / "exit_probe.py").write_text(EXIT_PROBE)
    result = _run(_torchrun("--nproc_per_node", "2", str(folder / "exit_probe.py"), "train",
                            *_overrides(no_dropout_bert, data, folder / "-", per_device_train_batch_size=8,
                                        save_total_limit=10)), cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((folder / "runs").iterdir())
    assert len(runs) == 1, runs  # rank 0 chose the folder (and id) for both
    return runs[0], result


def test_two_processes_train_the_weights_of_one(ddp_run, reference, no_dropout_bert):
    run, result = ddp_run
    assert max_weight_diff(run, reference) < WEIGHT_TOLERANCE
    assert max_weight_diff(run, no_dropout_bert) > 1e-3  # it trained
    _assert_all_examples_once(run, reference)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["num_processes"] == 2
    assert result.stdout.count("training: ") == 1 and result.stdout.count("Data report") == 1  # printed once
    assert "effective batch 16 = 8 x 2 processes x 1" in result.stdout
    assert result.stdout.count("process group at exit: destroyed") == 2, result.stdout[-2000:]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in line and "eval_loss" not in line]
    assert steps == list(range(1, 15))  # one writer
    print(f"2 processes: max weight difference {max_weight_diff(run, reference):.2e}")


def test_a_two_process_checkpoint_resumes_on_one_process(ddp_run, no_dropout_bert, data, tmp_path, capsys):
    """Elastic resume: checkpoint-6 of the 2 x 8 run continues on 1 process as 8 x accumulation 2 (the same
    effective batch of 16, the same data order) and ends with the uninterrupted 2-process weights."""
    import tuneforge

    run, _ = ddp_run
    out = tmp_path / "run"
    out.mkdir()
    shutil.copytree(run / "checkpoints" / "checkpoint-6", out / "checkpoints" / "checkpoint-6")
    resumed = tuneforge.train(None, _overrides(no_dropout_bert, data, out, per_device_train_batch_size=8,
                                               resume_from_checkpoint=out / "checkpoints" / "checkpoint-6"))
    said = capsys.readouterr().out
    assert "elastic resume" in said and "8 x 1 process(es) x 2" in said, said[-2000:]
    state = json.loads((resumed.path / "checkpoints" / "checkpoint-14" / "trainer_state.json").read_text())
    assert state["num_processes"] == 1 and state["effective_batch"] == 16
    assert state["global_step"] == 14
    assert max_weight_diff(resumed.path, run) < WEIGHT_TOLERANCE
    assert max_weight_diff(resumed.path, run / "checkpoints" / "checkpoint-6") > 1e-4  # the 8 steps after it trained


def test_an_effective_batch_the_processes_cannot_share_is_refused():
    from tuneforge.engine.loop import _elastic
    from tuneforge.errors import UserError

    said: list[str] = []
    tracker = type("T", (), {"print": staticmethod(said.append)})()
    state = {"num_processes": 2, "effective_batch": 16}
    assert _elastic(state, 8, 1, 2, tracker) == (8, 1) and said == []  # unchanged: nothing to say
    assert _elastic(state, 8, 1, 1, tracker) == (8, 2) and "8 x 1 process(es) x 2" in said[-1]
    assert _elastic(state, 16, 1, 4, tracker) == (4, 1)
    with pytest.raises(UserError, match=r"3 processes cannot share evenly.*divides 16"):
        _elastic(state, 8, 1, 3, tracker)
    # an old checkpoint without effective_batch: the config's layout on the process count that wrote it
    assert _elastic({"num_processes": 2}, 4, 2, 1, tracker) == (4, 4)


def test_gradient_accumulation_across_processes(reference, no_dropout_bert, data, tmp_path):
    """2 processes x batch 4 x accumulation 2, and 1 process x 8 x 2, are optimizer steps of 16 rows cut from the
    same step order as batch 16: both end with the weights of 1 process x 16 (accumulation only saves memory)."""
    import tuneforge

    one = tuneforge.train(None, _overrides(no_dropout_bert, data, tmp_path / "one", per_device_train_batch_size=8,
                                           gradient_accumulation_steps=2)).path
    assert max_weight_diff(one, reference) < WEIGHT_TOLERANCE
    result = _run(_torchrun("--nproc_per_node", "2", "-m", "tuneforge", "train",
                            *_overrides(no_dropout_bert, data, tmp_path / "two", per_device_train_batch_size=4,
                                        gradient_accumulation_steps=2)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_weight_diff(tmp_path / "two", reference) < WEIGHT_TOLERANCE


def test_two_nodes_on_one_machine(reference, no_dropout_bert, data, tmp_path):
    port = str(free_port())
    args = _overrides(no_dropout_bert, data, tmp_path / "run", per_device_train_batch_size=8)
    nodes = [subprocess.Popen([str(BIN / "torchrun"), "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node",
                               "1", "--master_addr", "127.0.0.1", "--master_port", port, "-m", "tuneforge", "train",
                               *args], cwd=tmp_path, env=launcher_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [o[1][-2000:] for o in outputs]
    assert max_weight_diff(tmp_path / "run", reference) < WEIGHT_TOLERANCE
    _assert_all_examples_once(tmp_path / "run", reference)
    assert "training: " not in outputs[1][0]  # node 1 prints nothing of its own


def test_a_data_error_is_one_line_from_two_processes(tiny_bert, data, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,category\nhello,a\n")  # no label column: found by the main process's data checks
    result = _run([str(BIN / "tuneforge"), "train", "--nproc", "2",
                   *_overrides(tiny_bert, {"train": bad, "validation": data["validation"]}, tmp_path / "run")],
                  cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "label" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_fsdp_is_refused_in_one_line(capsys, tiny_bert, data, tmp_path):
    line = one_line_error(capsys, ["train", *base_overrides(tiny_bert, data, tmp_path / "run", strategy="fsdp")])
    assert "distributed.strategy" in line


# Runs the CLI under torchrun; with TF_TEST_SAVE_FLAG set, the main process pauses in the middle of writing
# checkpoint-4 (after its files, before the rename) and says so, so the test kills every process then.
HARNESS = """
import os, sys, time
import tuneforge.engine.checkpoint as checkpoint
flag = os.environ.get("TF_TEST_SAVE_FLAG")
if flag:
    original = checkpoint._fsync_tree
    def slow(path):
        if path.name.endswith("-4"):
            open(flag, "w").write(str(path))
            time.sleep(120)
        original(path)
    checkpoint._fsync_tree = slow
from tuneforge.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def nproc_run(tiny_bert, data, tmp_path_factory) -> Path:
    """`tuneforge train --nproc 2`, uninterrupted, with dropout (the tiny BERT's own 0.1)."""
    out = tmp_path_factory.mktemp("ddp_nproc") / "run"
    result = _run([str(BIN / "tuneforge"), "train", "--nproc", "2",
                   *_overrides(tiny_bert, data, out, per_device_train_batch_size=8)], cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("training: ") == 1
    return out


def test_nproc_starts_two_processes(nproc_run):
    info = json.loads((nproc_run / "run.json").read_text())
    assert info["status"] == "finished" and info["num_processes"] == 2
    assert {p.name for p in (nproc_run / "checkpoints" / "checkpoint-14").iterdir()} >= {"rng_state.pt",
                                                                                          "rng_state_1.pt"}


def test_kill_two_processes_then_resume_gives_the_uninterrupted_weights(nproc_run, tiny_bert, data, tmp_path):
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    out, flag = tmp_path / "run", tmp_path / "saving"
    args = _overrides(tiny_bert, data, out, per_device_train_batch_size=8)
    proc = subprocess.Popen(_torchrun("--nproc_per_node", "2", str(harness), "train", *args), cwd=tmp_path,
                            env=launcher_env() | {"TF_TEST_SAVE_FLAG": str(flag)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 180
    while not flag.exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "checkpoint-4 never started"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both processes, mid-write of checkpoint-4
    proc.wait()
    assert not (out / "checkpoints" / "checkpoint-4").exists()
    result = _run(_torchrun("--nproc_per_node", "2", "-m", "tuneforge", "train", *args, "--resume", "auto"),
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout and "checkpoint-2" in result.stdout
    assert max_weight_diff(out, nproc_run) < 1e-6  # the same code path, the same order of operations


def _rank_pid(marker: str, rank: int) -> int | None:
    """The pid of the training process of `rank` whose environment carries TF_TEST_MARKER=marker."""
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"TF_TEST_MARKER={marker}".encode() in env and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


def _lose_rank_one(tiny_bert, data, tmp_path, how: signal.Signals, *extra: str) -> tuple[int, str, dict]:
    """A long `--nproc 2` run; once it has logged a few steps, rank 1 gets `how`; -> (exit code, stderr, run.json)."""
    out, marker = tmp_path / "run", tmp_path.name
    args = _overrides(tiny_bert, data, out, per_device_train_batch_size=8, num_train_epochs=500, save_steps=20)
    proc = subprocess.Popen([str(BIN / "tuneforge"), "train", "--nproc", "2", *args, *extra], cwd=tmp_path,
                            env=launcher_env() | {"TF_TEST_MARKER": marker}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    log = out / "metrics.jsonl"
    while not (log.exists() and log.read_text().count('"loss"') >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:] if proc.poll() else ""
        time.sleep(0.2)
    victim = _rank_pid(marker, 1)
    assert victim is not None
    os.kill(victim, how)
    if how == signal.SIGSTOP:  # the launcher would wait 30 s for the frozen process once rank 0 has left
        main = _rank_pid(marker, 0)
        while main is not None and Path(f"/proc/{main}").exists() and \
                Path(f"/proc/{main}/stat").read_text().split()[2] != "Z":
            assert time.monotonic() < deadline + 120, "rank 0 never noticed the frozen process"
            time.sleep(0.2)
        os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, json.loads((out / "run.json").read_text())


def _assert_one_line(err: str, expected: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: process rank 1 of 2 " + expected), err[-3000:]
    assert "Traceback" not in err and "--resume auto" in lines[0]


def test_a_killed_process_stops_the_run_with_one_line_naming_it(tiny_bert, data, tmp_path):
    """SIGKILL of rank 1: rank 0's next collective fails at once (gloo); it names rank 1 from the heartbeats
    (engine/watchdog.py), marks the run interrupted and exits 1, instead of a traceback per process."""
    code, err, info = _lose_rank_one(tiny_bert, data, tmp_path, signal.SIGKILL)
    assert code == 1, err[-3000:]
    _assert_one_line(err, "stopped without a word")
    assert info["status"] == "interrupted" and "rank 1" in info["error"]


def test_a_frozen_process_is_found_by_its_heartbeat(tiny_bert, data, tmp_path):
    """SIGSTOP of rank 1: nothing raises (rank 0 waits in a collective, which would last timeout_minutes); the
    watchdog finds rank 1's heartbeat still for peer_timeout_seconds and ends the run."""
    code, err, info = _lose_rank_one(tiny_bert, data, tmp_path, signal.SIGSTOP,
                                     "distributed.peer_timeout_seconds=5")
    assert code == 1, err[-3000:]
    _assert_one_line(err, "has not answered for")
    assert info["status"] == "interrupted"


def test_processes_whose_launcher_is_killed_stop_with_one_line(tiny_bert, data, tmp_path):
    """kill -9 of `tuneforge train --nproc 2` itself (the launcher, which hosts the processes' store: what a
    tune study does to a trial it stops): the workers find the store gone and end within seconds, one line,
    the run interrupted, instead of training on as orphans."""
    out, marker = tmp_path / "run", tmp_path.name
    args = _overrides(tiny_bert, data, out, per_device_train_batch_size=8, num_train_epochs=500, save_steps=20)
    proc = subprocess.Popen([str(BIN / "tuneforge"), "train", "--nproc", "2", *args], cwd=tmp_path,
                            env=launcher_env() | {"TF_TEST_MARKER": marker}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    log = out / "metrics.jsonl"
    while not (log.exists() and log.read_text().count('"loss"') >= 3):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    workers = [_rank_pid(marker, r) for r in (0, 1)]
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)  # the pipe closes when the last worker has gone
    assert all(not Path(f"/proc/{p}").exists() or Path(f"/proc/{p}/stat").read_text().split()[2] == "Z"
               for p in workers if p)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the launcher's key-value store"), err[-3000:]
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"


def test_merged_evaluation_states_equal_one_process_folding_every_batch():
    """evaluate/shards.py on the state kinds the tasks keep: numbers, lists, ByExample (windows of one example on
    different processes), ErrorCollector (worst rows, length buckets), RougeAccumulator; settings stay."""
    import numpy as np

    from tuneforge.evaluate.errors import ErrorCollector
    from tuneforge.evaluate.gather import ByExample
    from tuneforge.evaluate.rouge import RougeAccumulator
    from tuneforge.evaluate.shards import increments, merge, snapshot

    lengths = np.array([3, 9, 4, 12, 7, 5, 8])
    texts = ["a b c", "b c d", "the cat", "a dog", "red sun", "blue moon", "green tree"]

    def init() -> dict:
        return {"n_best": 20, "loss_sum": 0.0, "windows": ByExample(), "rouge": RougeAccumulator(),
                "errors": ErrorCollector("accuracy", lengths, 10, describe=lambda r: {"row": r}, top_k=3)}

    def fold(state: dict, rows: np.ndarray) -> None:
        state["loss_sum"] += float(rows.sum()) * 0.1
        state.setdefault("pred", []).append(rows * 2)
        state["windows"].add(rows, rows // 2, [f"w{r}" for r in rows])  # rows 2k and 2k+1 are one example
        state["rouge"].add([texts[r] for r in rows], [texts[(r + 1) % 7] for r in rows])
        state["errors"].add(rows, values=(rows % 2).astype(float), badness=np.where(rows % 2, np.nan, rows / 10))
        state["split"] = "validation"

    one = init()
    for batch in (np.array([0, 1, 2]), np.array([3, 4]), np.array([5, 6])):
        fold(one, batch)
    states = [init(), init()]
    bases = [snapshot(s) for s in states]
    fold(states[0], np.array([0, 2, 4]))
    fold(states[0], np.array([6]))
    fold(states[1], np.array([1, 3, 5]))
    parts = [increments(s, b) for s, b in zip(states, bases)]
    merged = [merge(s, b, parts) for s, b in zip(states, bases)]
    for m in merged:  # every process holds the same merged state
        assert m["n_best"] == 20 and m["split"] == "validation"
        assert m["loss_sum"] == pytest.approx(one["loss_sum"], abs=1e-12)
        assert sorted(np.concatenate(m["pred"]).tolist()) == sorted(np.concatenate(one["pred"]).tolist())
        assert [(e, [i for _, i in rows]) for e, rows in m["windows"].groups()] == \
            [(e, [i for _, i in rows]) for e, rows in one["windows"].groups()]
        assert m["rouge"].result() == pytest.approx(one["rouge"].result())
        assert m["errors"].worst() == one["errors"].worst() and m["errors"].slices() == one["errors"].slices()
