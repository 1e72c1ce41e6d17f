"""SIGKILL at random points (one of them in the middle of a checkpoint write), resume, same final weights."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import base_overrides
from safetensors.torch import load_file

import tuneforge

COMMON = dict(max_steps=12, eval_strategy="no", load_best_model_at_end="false", per_device_train_batch_size=8,
              gradient_accumulation_steps=2, save_strategy="steps", save_steps=2, save_total_limit=2,
              logging_steps=1)

# Runs the real CLI; with TF_TEST_SAVE_FLAG set, every checkpoint write pauses after its files are written and
# before the rename, and announces itself, so the test can kill the process in the middle of a save.
HARNESS = """
import os, sys, time
import tuneforge.engine.checkpoint as checkpoint
flag = os.environ.get("TF_TEST_SAVE_FLAG")
if flag:
    original = checkpoint._fsync_tree
    def slow(path):
        open(flag, "w").write(str(path))
        time.sleep(30)
        original(path)
    checkpoint._fsync_tree = slow
from tuneforge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"training ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _steps_logged(out: Path) -> int:
    file = out / "metrics.jsonl"
    if not file.exists():
        return 0
    steps = [json.loads(x).get("step", 0) for x in file.read_text().splitlines() if x.endswith("}")]
    return max(steps, default=0)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_weights(tiny_bert, toy_data, tmp_path):
    reference = tuneforge.train(None, base_overrides(tiny_bert, toy_data, tmp_path / "reference", **COMMON))
    expected = load_file(reference.path / "model.safetensors")
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    rng = random.Random()
    kill_after = ["save"] + sorted(rng.sample(range(1, COMMON["max_steps"]), 4))
    for trial, when in enumerate(kill_after):
        out = tmp_path / f"trial{trial}"
        argv = [sys.executable, str(harness), "train", *base_overrides(tiny_bert, toy_data, out, **COMMON)]
        env = dict(os.environ)
        flag = tmp_path / f"saving{trial}"
        if when == "save":
            env["TF_TEST_SAVE_FLAG"] = str(flag)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if when == "save":
            _wait_for(flag.exists, proc, "a checkpoint write")
        else:
            _wait_for(lambda out=out, when=when: _steps_logged(out) >= when, proc, f"step {when}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if when == "save":
            assert list((out / "checkpoints").glob(".tmp-checkpoint-*")), "the kill did not land mid-write"
        resumed = subprocess.run([*argv, "--resume", "auto"], capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, f"trial {trial} (killed after {when}): {resumed.stderr}"
        assert not list((out / "checkpoints").glob(".tmp-checkpoint-*"))  # stale temporary folder cleaned
        assert json.loads((out / "run.json").read_text())["status"] == "finished"
        got = load_file(out / "model.safetensors")
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6,
                                       msg=f"trial {trial}, killed after {when}: {key} differs")
