"""The train workflow: `tuneforge.train()` checks the output folder and the data first (no torch), then loads
the model, runs the engine and saves; what a run folder holds is described in runs/record.py.

>>> import tuneforge
>>> run = tuneforge.train("run.yaml", ["num_train_epochs=1"])      # doctest: +SKIP
>>> run.path, run.metrics["eval"]["accuracy"]                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuneforge.config import RunConfig, load_config
from tuneforge.data.cache import cache_root
from tuneforge.errors import Interrupted, PeerLost, UserError
from tuneforge.runs.record import RUNS_ROOT, Run, is_run, now, read_info, write_info, write_json
from tuneforge.tasks import get_task


def _slug(name: str) -> str:
    path = Path(name.rstrip("/"))
    if path.name.lower() in ("model", "models", "final", "best", "hf", "weights") and path.parent.name:
        path = path.parent  # a generic folder name says nothing; its parent usually names the model
    return re.sub(r"[^A-Za-z0-9._-]+", "-", path.name)[:40] or "model"


def prepare_output_dir(cfg: RunConfig) -> Path:
    """Choose or check the run folder before any heavy work: never overwrite a run by accident."""
    t = cfg.training
    if t.output_dir:
        path = Path(t.output_dir)
        if path.exists() and not path.is_dir():
            raise UserError(f"training.output_dir: {path} exists and is a file; choose a folder")
        if path.is_dir() and any(path.iterdir()) and not t.resume_from_checkpoint:
            status = read_info(path).get("status") if is_run(path) else None
            what = f"a run (status {status})" if status else "files"
            raise UserError(f"training.output_dir: {path} already holds {what}; choose a new output_dir, or "
                            "continue it with resume_from_checkpoint=auto")
        return path
    if t.resume_from_checkpoint:
        raise UserError("training.resume_from_checkpoint: also set training.output_dir to the run to resume")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = RUNS_ROOT / f"{stamp}-{cfg.task}-{_slug(cfg.model.model_name_or_path or '')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    return path


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("tuneforge", "torch", "transformers", "accelerate", "datasets", "tokenizers"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def _tags() -> dict[str, Any]:
    """{"tags": {...}} from $TUNEFORGE_RUN_TAGS (a JSON object: `tuneforge tune` tags each trial with its study
    and trial number), else nothing."""
    import json

    raw = os.environ.get("TUNEFORGE_RUN_TAGS")
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except ValueError:
        raise UserError(f"TUNEFORGE_RUN_TAGS: not a JSON object ({raw[:80]!r}); e.g. '{{\"study\": \"s1\"}}'"
                        ) from None
    if not isinstance(tags, dict):
        raise UserError(f"TUNEFORGE_RUN_TAGS: expected a JSON object, got {raw[:80]!r}")
    return {"tags": tags}


def _processes(cfg: RunConfig) -> Any:
    """This process's place in the run: one process (torch not imported) unless a launcher started several."""
    from tuneforge.engine.distributed import Processes, launched

    if not launched():
        return Processes()
    from tuneforge.engine.distributed import start_processes
    from tuneforge.engine.session import wants_cuda

    return start_processes(wants_cuda(cfg), cfg.distributed.timeout_minutes)


@dataclass
class Prepared:
    """Everything a training (or an LR range test) starts from."""

    cfg: RunConfig
    model: Any
    tokenizer: Any
    revision: str | None
    session: Any
    splits: dict[str, Any]
    max_length: int


def prepare_training(cfg: RunConfig, task: Any, data: Any, console: Any, procs: Any = None) -> Prepared:
    """Load model and tokenizer, apply LoRA / freezing / memory savers, start the session, tokenize. `procs`
    (engine/distributed.py Processes): with several processes the main one loads (a hub download lands in the
    cache once) and tokenizes (into the shared cache) first, then the others read what it cached."""
    from accelerate.utils import set_seed

    from tuneforge.engine.distributed import Processes
    from tuneforge.engine.memory import apply_memory_savers
    from tuneforge.engine.session import start_session

    procs = procs or Processes()
    set_seed(cfg.training.seed)  # before loading: a new head's initialisation depends on it
    model, tokenizer, revision = procs.main_first(lambda: task.load(cfg, data))
    from tuneforge.engine.lora import resolve_learning_rate

    cfg = resolve_learning_rate(cfg)  # LoRA's default rate, before the task's model-family one
    # defaults that depend on the model or the data (family learning rate, prefix, data format, block size)
    cfg, notes = task.resolve(cfg, model, tokenizer, data)
    for note in notes:
        console.print(f"using {note}", highlight=False)
    if cfg.lora.enabled:
        from tuneforge.engine.lora import apply_lora

        model = apply_lora(model, cfg.lora, cfg.task, getattr(model, "tuneforge_new_keys", []))
    if cfg.freeze.enabled:
        from tuneforge.engine.freeze import apply_freeze

        for note in apply_freeze(model, cfg.freeze):
            console.print(note, highlight=False)
    session = start_session(cfg, console, task.fp16_safe(model.config))
    from tuneforge.engine.evaluation import resolve_eval_batch

    cfg, note = resolve_eval_batch(cfg, session.accelerator.device.type)
    if note:
        console.print(f"using {note}", highlight=False)
    from tuneforge.engine.kernels import fuse_activations
    from tuneforge.engine.precision import cpu_bf16_attention

    notes = [fuse_activations(model)]
    if session.accelerator.device.type == "cpu" and session.accelerator.mixed_precision == "bf16":
        notes.append(cpu_bf16_attention(model))
    notes += apply_memory_savers(model, cfg, session.accelerator.mixed_precision)
    for note in filter(None, notes):
        console.print(note, highlight=False)
    max_length = task.max_length(cfg, tokenizer, model.config)
    started = time.perf_counter()
    splits = procs.main_first(lambda: task.tokenize(tokenizer, data, cfg, max_length))
    seconds = time.perf_counter() - started
    tokens = sum(len(s.input_ids) for s in splits.values())
    console.print(f"tokenized {sum(len(t) for t in data.splits.values())} rows into {tokens} tokens in {seconds:.1f} s "
                  f"(cache: {cache_root(cfg.data.preprocessing_cache_dir)})", highlight=False)
    return Prepared(cfg, model, tokenizer, revision, session, splits, max_length)


def train(config: RunConfig | str | os.PathLike | dict[str, Any] | None = None,
          overrides: list[str] | dict[str, Any] | None = None, console: Any = None) -> Run:
    """Train a model as described by `config` (+ overrides) and return its finished Run. Under a launcher
    (torchrun, accelerate launch, `tuneforge train --nproc N`) every process calls this: the main process
    decides (run folder, data, batch size, learning rate) and writes; the others train their share."""
    from tuneforge.engine.distributed import env_rank, launched

    try:
        cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
    except UserError as err:
        err.shared = launched() and env_rank() != 0  # every process read the same config: print it once
        raise
    procs = _processes(cfg)
    if not procs.distributed:
        return _train(cfg, procs, console, {})
    from tuneforge.engine.distributed import release_at_exit
    from tuneforge.engine.watchdog import collective_failure, start_watchdog

    watchdog = start_watchdog(procs.rank, procs.world, cfg.distributed.peer_timeout_seconds)
    where: dict[str, Path] = {}  # the run folder, once the main process has chosen it

    def lost(line: str, reports: bool) -> PeerLost:
        run_dir = where.get("run_dir")
        line += f"; the run is interrupted: continue with: tuneforge train {run_dir / 'run_config.yaml'} " \
                "--resume auto" if run_dir else "; nothing was saved yet"
        if reports and run_dir is not None and is_run(run_dir):
            Run(run_dir).update(status="interrupted", error=line)
        return PeerLost(line, shared=not reports)

    if watchdog is None:
        try:
            run = _train(cfg, procs, console, where)
        except UserError:  # every process raised it, or this one alone outside a collective
            release_at_exit()
            raise
        release_at_exit()
        return run

    def on_lost(line: str, reports: bool) -> None:  # the watchdog ends the process after this
        err = lost(line, reports)
        if not err.shared:
            print(f"error: {err}", file=sys.stderr, flush=True)

    watchdog.on_lost = on_lost
    import signal

    def terminated(signum: int, frame: Any) -> None:
        raise _Terminated  # outside the training loop (whose own handler saves a checkpoint first)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        run = _train(cfg, procs, console, where)
    except BaseException as err:
        if isinstance(err, _Terminated) or collective_failure(err):
            # the launcher stops the other processes when one dies (torchrun: SIGTERM, at any point of the
            # failure's handling): name the lost process first, which takes a few seconds, then leave
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            line, reports, found = watchdog.lost()
            if found or not isinstance(err, _Terminated):
                raise lost(line, reports) from None
            raise Interrupted("SIGTERM: stopped outside the training loop (no checkpoint saved then)", "SIGTERM"
                              ) from None
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        watchdog.finish(f"failed: {type(err).__name__}: {first}" if not isinstance(err, UserError) else
                        f"failed: {first}")
        if isinstance(err, UserError):  # not a bug mid-collective, whose async work may still wait on a peer
            release_at_exit()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    watchdog.finish()
    release_at_exit()
    return run


class _Terminated(BaseException):
    """SIGTERM in a distributed run outside the training loop: often the launcher stopping this process
    because another one died."""


def _train(cfg: RunConfig, procs: Any, console: Any, where: dict[str, Path]) -> Run:
    """The training of `train`, in this process (one of several under a launcher); `where` receives the run
    folder once chosen."""
    def decide() -> tuple[RunConfig, Path, Any, Any]:
        """The run folder (and id), the integrations and the validated data: once, on the main process."""
        run_dir = prepare_output_dir(cfg)
        c = cfg
        if c.training.output_dir is None:  # run_config.yaml then resumes this very folder
            import dataclasses

            c = dataclasses.replace(c, training=dataclasses.replace(c.training, output_dir=str(run_dir)))
        from tuneforge.runs.integrations import check_integrations

        check_integrations(c)  # report_to package, hub token: before hours of training, not after
        task = get_task(c.task)
        data = task.prepare_data(c)  # every data error is raised here, before torch is imported (one process)
        return c, run_dir, task, data

    cfg, run_dir, task, data = procs.on_main(decide)
    where["run_dir"] = run_dir
    from rich.console import Console

    main = procs.is_main
    console = (console or Console(soft_wrap=True)) if main else Console(quiet=True)  # messages print once
    p = prepare_training(cfg, task, data, console, procs)
    cfg, model, tokenizer, session, splits = p.cfg, p.model, p.tokenizer, p.session, p.splits
    revision, max_length = p.revision, p.max_length

    from tuneforge.engine.preflight import preflight
    from tuneforge.runs.lineage import lineage
    from tuneforge.runs.liveness import start_heartbeat
    from tuneforge.tasks.tokenize import tokenizer_fingerprint

    run = Run(run_dir)

    def choose() -> tuple[RunConfig, dict[str, Any], dict[str, Any]]:
        """Batch size and learning rate (auto_find_batch_size, learning_rate: auto): decided on one process."""
        run_dir.mkdir(parents=True, exist_ok=True)
        recorded = run.info if is_run(run_dir) else {}
        # a resumed run reuses the batch size and learning rate it chose before instead of searching again
        previous = recorded if cfg.training.resume_from_checkpoint else {}
        return (*preflight(cfg, session, task, model, tokenizer, splits, run_dir, console, previous), recorded)

    cfg, chosen, recorded = procs.on_main(choose)
    if not main:  # the main process writes the run folder; this one trains its share and leaves
        session.fit(cfg, task, model, tokenizer, splits, data, run_dir)
        return run
    info = recorded or {"id": run_dir.name, "created_at": now()}
    info |= {"task": cfg.task, "status": "running", "base_model": cfg.model.model_name_or_path,
             "model_revision": revision, "data_fingerprint": data.fingerprint, "max_length": max_length,
             "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
             "device": session.device_description, "mixed_precision": session.mixed_precision,
             "versions": _versions(), "pid": os.getpid(), "updated_at": now(), **chosen,
             **({"num_processes": procs.world} if procs.distributed else {}),
             **lineage(cfg, info), **_tags()}
    write_info(run_dir, info)
    start_heartbeat(run_dir)  # lets `tuneforge runs list` tell a silently dead run from a running one
    (run_dir / "run_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    write_json(run_dir / "data_report.json", data.report.to_dict())
    (run_dir / "data_report.txt").write_text(data.report.render() + "\n", encoding="utf-8")
    console.print(data.report.render(), highlight=False)
    try:
        metrics = session.fit(cfg, task, model, tokenizer, splits, data, run_dir)  # the config written above
        write_json(run_dir / "metrics.json", metrics)
        session.save_final(cfg, model, tokenizer, run_dir)
        from tuneforge.runs.outputs import finish_run, record_evaluation

        metrics = record_evaluation(run_dir, metrics, session.analysis, splits, data, cfg)
    except KeyboardInterrupt:
        run.update(status="interrupted")
        raise
    except Interrupted as err:
        run.update(status="interrupted", error=str(err))
        raise
    except BaseException as err:
        run.update(status="failed", error=str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise
    # an evaluation that ran out of memory halved the evaluation batch for the rest of the run (the session's
    # state; the config keeps what was asked for): run.json records the size used
    used = session.eval_batch.size
    halved = {"eval_batch_size": used} if used != cfg.training.per_device_eval_batch_size else {}
    run.update(status="finished", finished_at=now(), **halved)
    finish_run(run, console)  # report.html, README.md (model card, last), push_to_hub
    from tuneforge.runs.report import print_result

    print_result(metrics, console)  # the model beside its baselines, and what to try when it is weak
    console.print(f"run saved to {run_dir}", highlight=False)
    return run
