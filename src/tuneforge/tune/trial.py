"""One trial of a study: a normal `tuneforge train` run in its own process, watched through its metrics.jsonl.

The parent reports every validation evaluation to Optuna (`trial.report`, step = the evaluation's index, so
trials with different batch sizes compare at the same epoch) and asks `trial.should_prune()`; a pruned trial's
process gets SIGTERM (the engine stops at the next step boundary) and its run is recorded "pruned". A crash, an
out-of-memory kill or a data error ends that trial only: it is recorded "failed" with its one-line reason and
never counted as pruned. The child runs in its own process group and gets SIGKILL when the parent dies
(Linux: PR_SET_PDEATHSIG), so a killed study leaves no orphan training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.runs.record import Run, is_run, read_log

POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 60  # after SIGTERM, how long a pruned trial may take to stop before SIGKILL
TAGS_ENV = "TUNEFORGE_RUN_TAGS"  # JSON object a run records in run.json "tags" (the study and trial number)


class TrialFailed(Exception):
    """The trial's process failed; the message is its one-line reason (the study goes on)."""


class TrialPrunedByStudy(Exception):
    """The study pruned the trial after `step` evaluations (raised as optuna.TrialPruned by the objective)."""


@dataclass
class TrialProcess:
    """What one trial needs: its config file, run folder, the metric it reports and where its output goes."""

    config_path: Path
    run_dir: Path
    metric: str  # eval_<metric_for_best_model>
    log_path: Path
    threads: int
    tags: dict[str, Any]
    nproc: int | None = None  # a distributed trial: `tuneforge train --nproc N` (DDP on this machine)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()  # its own process group: the parent can stop the trial and everything it started
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start(t: TrialProcess) -> subprocess.Popen:
    env = {**os.environ, TAGS_ENV: json.dumps(t.tags), "OMP_NUM_THREADS": str(t.threads),
           "MKL_NUM_THREADS": str(t.threads), "TOKENIZERS_PARALLELISM": "false"}
    log = open(t.log_path, "ab")
    try:
        nproc = ["--nproc", str(t.nproc)] if t.nproc else []
        return subprocess.Popen([sys.executable, "-m", "tuneforge", "train", *nproc, str(t.config_path)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=_die_with_parent)
    finally:
        log.close()


def _stop(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the trial's process group, SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def evaluations(run_dir: Path, metric: str) -> list[float]:
    """The values of `metric` in the run's metrics.jsonl so far, in order."""
    return [float(r[metric]) for r in read_log(run_dir / "metrics.jsonl")
            if isinstance(r.get(metric), (int, float))]


def failure_reason(t: TrialProcess, returncode: int) -> str:
    """The one line that says why the trial's process ended badly."""
    if returncode < 0:
        name = signal.Signals(-returncode).name
        why = " (the out-of-memory killer sends it)" if name == "SIGKILL" else ""
        return f"the trial's process was killed by {name}{why}"
    lines = t.log_path.read_text(encoding="utf-8", errors="replace").splitlines() if t.log_path.exists() else []
    errors = [line for line in lines if line.startswith(("error:", "interrupted:"))]
    if errors:
        return errors[-1].partition(":")[2].strip()
    tail = next((line for line in reversed(lines) if line.strip()), "")
    return f"exit code {returncode}: {tail[:300]}" if tail else f"exit code {returncode}"


def run_trial(trial: Any, t: TrialProcess, stop_grace: float = STOP_GRACE_SECONDS) -> float:
    """Run the trial to its end; the objective value (the run's best validation metric). Raises
    TrialPrunedByStudy or TrialFailed; a KeyboardInterrupt stops the child first."""
    proc = start(t)
    reported = 0
    try:
        while True:
            returncode = proc.poll()
            values = evaluations(t.run_dir, t.metric)
            for step in range(reported, len(values)):
                trial.report(values[step], step)
                reported = step + 1
                if trial.should_prune():
                    _stop(proc, stop_grace)
                    if is_run(t.run_dir):
                        Run(t.run_dir).update(status="pruned", pruned_after_evaluations=reported)
                    raise TrialPrunedByStudy(f"pruned after {reported} evaluation(s) ({t.metric} {values[step]:.4g})")
            if returncode is not None:
                break
            time.sleep(POLL_SECONDS)
    except BaseException:
        if proc.poll() is None:
            _stop(proc, 10.0)
        raise
    if returncode != 0:
        reason = failure_reason(t, returncode)
        if is_run(t.run_dir) and Run(t.run_dir).status != "failed":
            Run(t.run_dir).update(status="failed", error=reason)
        raise TrialFailed(reason)
    metrics = Run(t.run_dir).metrics
    value = (metrics.get("eval") or {}).get(t.metric.removeprefix("eval_"))
    if not isinstance(value, (int, float)):
        raise TrialFailed(f"the run finished without a validation {t.metric.removeprefix('eval_')} (metrics.json)")
    return float(value)
