"""`tuneforge tune`: an Optuna study whose trials are ordinary training runs in their own processes.

>>> import tuneforge.tune
>>> result = tuneforge.tune.tune("run.yaml", ["learning_rate=log(1e-5, 1e-3)"], n_trials=20)   # doctest: +SKIP
>>> result.best_value, result.best_config                                                     # doctest: +SKIP

The study folder (training.output_dir, else runs/tune-<study name>) holds study.db (the default SQLite storage),
study.json, one run folder per trial (trial-0000, ...; `tuneforge runs list` shows them with their study and
trial tags), configs/ (each trial's config), logs/ (each trial's output), best.yaml (the best trial's complete
config, ready for `tuneforge train`) and report.html. The same command again continues the study: --n-trials
counts finished (complete or pruned) trials in all, a trial left running by a killed study is failed and retried
once its heartbeat is stale. Any Optuna storage URL (--storage postgresql://...) lets several machines work on one
study; each worker then samples with its own random seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuneforge.config import RunConfig, load_config
from tuneforge.config.loader import parse_override, read_config_file
from tuneforge.errors import ConfigError, UserError
from tuneforge.runs.record import RUNS_ROOT, write_json
from tuneforge.tasks import get_spec, get_task
from tuneforge.tune.space import canonical_key, check_space, is_expression, parse_space
from tuneforge.tune.trial import TrialFailed, TrialProcess, TrialPrunedByStudy, run_trial

STUDY_JSON = "study.json"
HEARTBEAT_SECONDS = 60  # a trial's heartbeat in the storage; stale (failed, retried) after twice this
MAX_RETRIES = 2  # a stale trial is retried at most this many times
FAILURE_STOP = 3  # the first this many trials all failed (none finished): stop the study


@dataclass
class StudyResult:
    name: str
    folder: Path
    storage: str
    metric: str
    direction: str
    best_value: float | None
    best_params: dict[str, Any]
    best_run: str | None
    best_config: Path | None
    counts: dict[str, int]


def split_overrides(items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(plain overrides, search expressions) from key=value items."""
    plain, search = {}, {}
    for item in items:
        key, value = parse_override(item)
        (search if is_expression(value) else plain)[key] = value
    return plain, search


def study_settings(config: str | os.PathLike | None, overrides: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(base config as a raw mapping, search space) from the YAML file and overrides, both checked."""
    raw = dict(read_config_file(config)) if config is not None else {}
    search = raw.pop("search", None) or {}
    plain, extra = split_overrides(overrides)
    search = {**search, **extra}
    base = {**raw, **plain}
    if not search:
        raise ConfigError("search: nothing to search; add a `search:` section to the config (e.g. `search: "
                          "{learning_rate: log(1e-5, 1e-3)}`) or an override like learning_rate='log(1e-5, 1e-3)'")
    space = parse_space(search)
    cfg = load_config(base)
    if cfg.training.eval_strategy == "no":
        raise ConfigError("training.eval_strategy: a study needs validation evaluations to compare and prune "
                          "trials; use epoch or steps")
    check_space(base, space)
    return base, space


def default_study_name(base: dict[str, Any], space: dict[str, Any], cfg: RunConfig) -> str:
    text = json.dumps({"base": base, "space": {k: repr(v) for k, v in space.items()}}, sort_keys=True, default=str)
    model = Path(str(cfg.model.model_name_or_path or "model").rstrip("/")).name[:30]
    return f"{cfg.task}-{model}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _suggest(trial: Any, key: str, distribution: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(key, list(distribution.choices))
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(key, distribution.low, distribution.high, step=distribution.step,
                                 log=distribution.log)
    return trial.suggest_float(key, distribution.low, distribution.high, step=distribution.step,
                               log=distribution.log)


def base_values(cfg: RunConfig, space: dict[str, Any]) -> dict[str, Any]:
    """The config's own value of each searched key that lies in its range (the first trial tries them)."""
    from optuna.distributions import CategoricalDistribution

    values = {}
    for key, distribution in space.items():
        section, _, name = key.partition(".")
        value = getattr(getattr(cfg, section), name)
        if isinstance(distribution, CategoricalDistribution):
            if value in distribution.choices:
                values[key] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and \
                distribution.low <= value <= distribution.high:
            values[key] = value
    return values


def _pruner(name: str) -> Any:
    import optuna

    if name == "median":  # Optuna's defaults: 5 finished trials first, from the first evaluation on
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":  # resource = evaluations; the most any trial makes is learnt from the first
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner: unknown pruner {name!r}; valid: median, hyperband, none")


def _storage(url: str, heartbeat: int) -> Any:
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    if "://" not in url:
        raise ConfigError(f"--storage: {url!r} is not a database URL; e.g. sqlite:///study.db or "
                          "postgresql://user:password@host/db")
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: stable in use
    from sqlalchemy.exc import IntegrityError

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
                engine_kwargs={"pool_pre_ping": True})
        except IntegrityError:  # two workers creating the tables at once: the other one won, use its tables
            time.sleep(0.5 * (attempt + 1))
        except (SQLAlchemyError, ImportError, ValueError) as err:  # a wrong URL, no server, no driver: one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"--storage: cannot open {url.split('@')[-1]!r}: {first}") from None
    raise UserError(f"--storage: {url.split('@')[-1]!r}: the tables could not be created (another worker kept "
                    "creating them); start the workers again")


def _finished(study: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    counts = {state.name.lower(): 0 for state in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] += 1
    return counts


def _line(trial: Any, best: Any, metric: str) -> str:
    params = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                       for k, v in trial.params.items())
    value = f"{metric} {trial.value:.4f}" if trial.value is not None else \
        (f"after {len(trial.intermediate_values)} evaluation(s)" if trial.intermediate_values else "")
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
        if trial.datetime_complete and trial.datetime_start else 0.0
    why = f" ({trial.user_attrs['error']})" if trial.user_attrs.get("error") else ""
    best_text = f"  best: trial {best.number} {metric} {best.value:.4f}" if best is not None else ""
    state = trial.state.name.lower()
    return f"trial {trial.number:>3}  {state:<8} {value}  [{params}]  {seconds:.0f} s{why}{best_text}"


def tune(config: str | os.PathLike | None, overrides: list[str] | None = None, *, n_trials: int = 20,
         timeout: float | None = None, storage: str | None = None, study_name: str | None = None,
         pruner: Any = "median", threads: int | None = None, heartbeat: int = HEARTBEAT_SECONDS,
         enqueue: list[dict[str, Any]] | None = None, sampler: Any = None, nproc: int | None = None,
         console: Any = None) -> StudyResult:
    """Run (or continue) a study until it has `n_trials` finished trials or `timeout` seconds passed.
    `pruner`: median, hyperband, none or an Optuna pruner; `enqueue`: settings ({key: value}) to try first, after
    the config's own values; `sampler`: an Optuna sampler (default TPE); `nproc`: each trial trains in that many
    processes (DDP, `tuneforge train --nproc`)."""
    try:
        import optuna
        from optuna.trial import TrialState
    except ImportError:
        raise UserError("tuneforge tune needs Optuna: pip install 'tuneforge[tune]'") from None

    if n_trials < 1:
        raise ConfigError(f"--n-trials: must be at least 1, got {n_trials}")
    base, space = study_settings(config, list(overrides or []))
    cfg = load_config(base)
    spec = get_spec(cfg.task)
    task = get_task(cfg.task)
    data = task.prepare_data(cfg)  # every data error now, before any trial; and the default metric may need it
    metric = task.best_metric(cfg, data)
    greater = cfg.training.greater_is_better if cfg.training.greater_is_better is not None \
        else spec.greater_is_better(metric)
    direction = "maximize" if greater else "minimize"
    name = study_name or default_study_name(base, space, cfg)
    folder = Path(cfg.training.output_dir) if cfg.training.output_dir else RUNS_ROOT / f"tune-{name}"
    for sub in ("configs", "logs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rdb = _storage(url, heartbeat)
    pruner_obj = _pruner(pruner) if isinstance(pruner, str) else pruner
    try:
        study = optuna.create_study(storage=rdb, study_name=name, direction=direction, pruner=pruner_obj,
                                    load_if_exists=True)
    except ValueError as err:  # e.g. the name exists with another direction
        raise UserError(f"--study-name: {name}: {err}") from None
    existing = len(study.get_trials(deepcopy=False))
    seed = None if storage else cfg.training.seed + existing  # several workers: each its own random stream
    study.sampler = sampler or optuna.samplers.TPESampler(seed=seed)
    write_json(folder / STUDY_JSON, {"study_name": name, "storage": url.split("@")[-1], "metric": metric,
                                     "direction": direction, "search": {k: repr(v) for k, v in space.items()},
                                     "task": cfg.task})
    if existing == 0:
        first = base_values(cfg, space)
        if first:
            study.enqueue_trial(first, user_attrs={"origin": "the config's own values"}, skip_if_exists=True)
    for params in enqueue or []:
        study.enqueue_trial({canonical_key(k): v for k, v in params.items()}, user_attrs={"origin": "enqueued"})

    from rich.console import Console

    console = console or Console(soft_wrap=True)
    done_states = (TrialState.COMPLETE, TrialState.PRUNED)
    n_threads = threads or max(1, (os.cpu_count() or 1) // (nproc or 1))
    base_trial = {k: v for k, v in base.items() if k not in ("output_dir", "training.output_dir")}
    if isinstance(base_trial.get("training"), dict):
        base_trial["training"] = {k: v for k, v in base_trial["training"].items() if k != "output_dir"}

    def objective(trial: Any) -> float:
        params = {key: _suggest(trial, key, d) for key, d in space.items()}
        run_dir = folder / f"trial-{trial.number:04d}"
        trial.set_user_attr("run", str(run_dir))
        config_path = folder / "configs" / f"trial-{trial.number:04d}.yaml"
        config_path.write_text(yaml.safe_dump({**base_trial, **params, "training.output_dir": str(run_dir)},
                                              sort_keys=False), encoding="utf-8")
        log = folder / "logs" / f"trial-{trial.number:04d}.log"
        process = TrialProcess(config_path, run_dir, f"eval_{metric}", log, n_threads,
                               {"study": name, "trial": trial.number}, nproc)
        try:
            return run_trial(trial, process)
        except TrialPrunedByStudy as err:
            trial.set_user_attr("pruned", str(err))
            raise optuna.TrialPruned(str(err)) from None
        except TrialFailed as err:
            trial.set_user_attr("error", str(err))
            raise

    def report_line(study: Any, trial: Any) -> None:
        try:
            best = study.best_trial
        except ValueError:
            best = None
        console.print(_line(trial, best, metric), highlight=False, markup=False)
        failed = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        recent = failed[-FAILURE_STOP:]
        if len(recent) == FAILURE_STOP and all(t.state == TrialState.FAIL for t in recent) and \
                not any(t.state in done_states for t in failed):
            study.stop()  # no trial ever finished: the data, the config or the machine, not the hyperparameters

    finished = sum(_finished(study)[s.name.lower()] for s in done_states)
    console.print(f"study {name}: {finished} of {n_trials} trials finished, {direction} validation {metric}; "
                  f"storage {url.split('@')[-1]}; folder {folder}", highlight=False, markup=False)
    started = time.time()
    if finished < n_trials:
        study.optimize(objective, n_trials=None, timeout=timeout, catch=(TrialFailed,),
                       callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=done_states), report_line])
    counts = _finished(study)
    failures = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    if not any(counts[s.name.lower()] for s in done_states) and failures:
        raise UserError(f"every trial failed; the last: {failures[-1].user_attrs.get('error', 'no reason recorded')} "
                        f"(logs in {folder / 'logs'})")
    return _finish(study, folder, url, metric, direction, counts, console, time.time() - started)


def _finish(study: Any, folder: Path, url: str, metric: str, direction: str, counts: dict[str, int], console: Any,
            seconds: float) -> StudyResult:
    from tuneforge.tune.report import write_study_report

    try:
        best = study.best_trial
    except ValueError:
        best = None
    best_config = None
    if best is not None:
        run_config = Path(best.user_attrs.get("run", "")) / "run_config.yaml"
        if run_config.is_file():
            resolved = yaml.safe_load(run_config.read_text(encoding="utf-8"))
            resolved.get("training", {}).pop("output_dir", None)  # `tuneforge train best.yaml` makes a new run
            resolved.get("training", {}).pop("resume_from_checkpoint", None)
            best_config = folder / "best.yaml"
            header = f"# best trial {best.number} of study {study.study_name}: validation {metric} {best.value:.6g}\n"
            best_config.write_text(header + yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    report = write_study_report(study, folder, metric)
    console.print(f"{counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed "
                  f"({seconds:.0f} s this session); report: {report}", highlight=False, markup=False)
    if best is not None:
        console.print(f"best: trial {best.number}, validation {metric} {best.value:.4f}; train it again with "
                      f"`tuneforge train {best_config}`" if best_config else f"best: trial {best.number}",
                      highlight=False, markup=False)
    return StudyResult(study.study_name, folder, url, metric, direction, best.value if best else None,
                       dict(best.params) if best else {}, best.user_attrs.get("run") if best else None, best_config,
                       counts)
