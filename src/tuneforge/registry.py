"""The run registry: every run folder under one root (default ./runs), its status (a silently dead process
shows as interrupted), its lineage, and side-by-side comparisons.

>>> from tuneforge.registry import list_runs, compare_runs
>>> [r["id"] for r in list_runs("runs", task="classification", status="finished")]   # doctest: +SKIP
['20261126-070000-classification-bert']
>>> compare_runs(["runs/a", "runs/b"])["config"]["training.learning_rate"]            # doctest: +SKIP
[2e-05, 5e-05]

Liveness: while training, a daemon thread touches `<run>/.heartbeat` every minute. A run recorded as
running is shown as interrupted when its process is gone (same host: pid check) or its heartbeat is older
than STALE_SECONDS (any host, e.g. a shared filesystem).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import ConfigError, UserError

HEARTBEAT = ".heartbeat"
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 15 * 60.0
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


# ---- at the start of training ------------------------------------------------------------------------
def check_integrations(cfg: Any) -> None:
    """Fail in a second, not after training: the report_to package and the hub token must be there."""
    t = cfg.training
    package = TRACKER_PACKAGES.get(t.report_to)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"training.report_to: {t.report_to} is not installed; `pip install {package}`, "
                          "or set report_to=none")
    if t.push_to_hub:
        from tuneforge.hub import require_token

        require_token()


def lineage(cfg: Any, info: dict[str, Any]) -> dict[str, Any]:
    """run.json fields: host (for the liveness check), parent run, and resume history."""
    out: dict[str, Any] = {"host": socket.gethostname()}
    base = Path(cfg.model.model_name_or_path or "")
    if (base / "run.json").is_file():  # continued from another run's folder
        parent = json.loads((base / "run.json").read_text())
        out["parent"] = {"id": parent.get("id"), "path": str(base.resolve()), "relation": "continued"}
    if cfg.training.resume_from_checkpoint:
        history = list(info.get("resumed_from", []))
        history.append({"checkpoint": cfg.training.resume_from_checkpoint, "at": _now()})
        out["resumed_from"] = history
    return out


def start_heartbeat(run_dir: Path, interval: float = HEARTBEAT_SECONDS) -> threading.Thread:
    """Touch run_dir/.heartbeat every `interval` seconds until run.json stops saying running (or the process
    exits: the thread is a daemon). It never writes run.json, so it cannot race the status updates."""
    pid = os.getpid()
    beat = run_dir / HEARTBEAT

    def loop() -> None:
        while True:
            beat.write_text(_now() + "\n", encoding="utf-8")
            time.sleep(interval)
            try:
                info = json.loads((run_dir / "run.json").read_text())
            except (OSError, ValueError):
                return
            if info.get("status") != "running" or info.get("pid") != pid:
                return

    thread = threading.Thread(target=loop, name=f"tuneforge-heartbeat-{run_dir.name}", daemon=True)
    thread.start()
    return thread


# ---- reading runs ---------------------------------------------------------------------------------------
def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def last_sign_of_life(run_dir: Path, info: dict[str, Any]) -> float:
    """Seconds since the epoch of the newest heartbeat or run.json update."""
    times = []
    if (run_dir / HEARTBEAT).exists():
        times.append((run_dir / HEARTBEAT).stat().st_mtime)
    if info.get("updated_at"):
        with contextlib.suppress(ValueError):
            times.append(dt.datetime.fromisoformat(info["updated_at"]).timestamp())
    return max(times, default=0.0)


def effective_status(run_dir: Path, info: dict[str, Any], now: float | None = None) -> str:
    """The recorded status, except that a 'running' run whose process is gone is 'interrupted'."""
    status = info.get("status", "unknown")
    if status != "running":
        return status
    if info.get("host") == socket.gethostname() and info.get("pid") and not _pid_alive(int(info["pid"])):
        return "interrupted"
    if (now or time.time()) - last_sign_of_life(run_dir, info) > STALE_SECONDS:
        return "interrupted"
    return "running"


def read_run(path: Path) -> dict[str, Any]:
    """run.json plus effective status, metrics and the headline metric; any status (unlike resolve_run)."""
    info = json.loads((path / "run.json").read_text())
    metrics_file = path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    return {**info, "path": str(path), "recorded_status": info.get("status"),
            "status": effective_status(path, info), "metrics": metrics}


def find_run(ref: str | os.PathLike, root: str | os.PathLike = "runs") -> Path:
    path = Path(ref)
    for candidate in (path, Path(root) / str(ref)):
        if (candidate / "run.json").is_file():
            return candidate
    matches = sorted(p.parent for p in Path(root).glob(f"*{ref}*/run.json"))
    if len(matches) == 1:
        return matches[0]
    what = f"{len(matches)} runs match" if matches else "no run folder (with run.json) found"
    raise UserError(f"RUN: {str(ref)!r}: {what} under {root}; give the run folder or its full id "
                    "(`tuneforge runs list`)")


def list_runs(root: str | os.PathLike = "runs", task: str | None = None, status: str | None = None
              ) -> list[dict[str, Any]]:
    """Every run under `root`, oldest first, optionally only one task and/or (effective) status."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--root: {root} is not a folder of runs; train a model first or pass --root")
    runs = []
    for file in sorted(root.glob("*/run.json")):
        try:
            run = read_run(file.parent)
        except (OSError, ValueError):
            continue  # a folder being written; not a run yet
        if (task is None or run.get("task") == task) and (status is None or run["status"] == status):
            runs.append(run)
    return sorted(runs, key=lambda r: r.get("created_at") or "")


def headline(run: dict[str, Any]) -> tuple[str, float | None]:
    """The metric that chose the best model, on test when there is one, else validation."""
    metrics = run.get("metrics") or {}
    name = (metrics.get("metric_for_best_model") or "loss").removeprefix("eval_")
    for split in ("test", "eval"):
        value = (metrics.get(split) or {}).get(name)
        if isinstance(value, (int, float)):
            return f"{split} {name}", float(value)
    return name, None


# ---- comparing runs -------------------------------------------------------------------------------------
def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def compare_runs(refs: list[str], root: str | os.PathLike = "runs") -> dict[str, Any]:
    """Config keys whose values differ, and every scalar eval/test metric with its delta from the first run."""
    if len(refs) < 2:
        raise UserError("runs compare: give at least two runs")
    paths = [find_run(r, root) for r in refs]
    configs = [_flatten(yaml.safe_load((p / "run_config.yaml").read_text()) or {}) for p in paths]
    runs = [read_run(p) for p in paths]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    config = {k: [c.get(k) for c in configs] for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1}
    metrics: dict[str, dict[str, Any]] = {}
    for split in ("eval", "test"):
        names = list(dict.fromkeys(k for r in runs for k, v in (r["metrics"].get(split) or {}).items()
                                   if isinstance(v, (int, float)) and not isinstance(v, bool)))
        for name in names:
            values = [(r["metrics"].get(split) or {}).get(name) for r in runs]
            deltas = [None if v is None or values[0] is None else v - values[0] for v in values]
            metrics[f"{split}.{name}"] = {"values": values, "deltas": deltas}
    return {"runs": [r["id"] for r in runs], "paths": [str(p) for p in paths], "config": config,
            "metrics": metrics, "status": [r["status"] for r in runs]}


# ---- terminal output --------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def print_runs(runs: list[dict[str, Any]], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(soft_wrap=True)
    table = Table(title=f"{len(runs)} runs")
    for col in ("id", "created", "task", "base model", "status", "metric", "value", "data", "parent"):
        table.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    for r in runs:
        name, value = headline(r)
        table.add_row(r.get("id", "?"), (r.get("created_at") or "")[:16].replace("T", " "), r.get("task", "?"),
                      Path(r.get("base_model") or "?").name or "?", r["status"], name, _fmt(value),
                      (r.get("data_fingerprint") or "")[:8], (r.get("parent") or {}).get("id") or "")
    console.print(table)


def print_run(ref: str, root: str | os.PathLike = "runs", console: Any = None) -> None:
    from rich.console import Console

    from tuneforge.report import print_metrics

    console = console or Console(soft_wrap=True)
    path = find_run(ref, root)
    run = read_run(path)
    for key in ("id", "path", "status", "task", "base_model", "model_revision", "created_at", "finished_at",
                "data_fingerprint", "device", "mixed_precision", "host", "pid", "parent", "resumed_from", "error"):
        if run.get(key) not in (None, "", []):
            console.print(f"{key:17} {run[key]}", highlight=False)
    m = run["metrics"]
    columns = {name: m[name] for name in ("eval", "test") if isinstance(m.get(name), dict)}
    columns |= {f"baseline {k}": v for k, v in (m.get("baselines") or {}).items() if isinstance(v, dict)}
    if columns:
        print_metrics(columns, title="metrics", console=console)
    config = path / "run_config.yaml"
    if config.exists():
        console.print("\n[bold]config[/]\n" + config.read_text(encoding="utf-8"), highlight=False)


def print_comparison(result: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(soft_wrap=True)
    ids = result["runs"]
    table = Table(title="config differences")
    table.add_column("key")
    for i in ids:
        table.add_column(i, overflow="fold")
    for key, values in result["config"].items():
        table.add_row(key, *[_fmt(v) for v in values])
    if not result["config"]:
        table.add_row("(identical configs)", *[""] * len(ids))
    console.print(table)
    table = Table(title=f"metrics (delta vs {ids[0]})")
    table.add_column("metric")
    for i in ids:
        table.add_column(i, justify="right", overflow="fold")
    for key, row in result["metrics"].items():
        cells = [_fmt(row["values"][0])] + [
            f"{_fmt(v)} ({d:+.4g})" if d is not None else _fmt(v) for v, d in zip(row["values"][1:], row["deltas"][1:])]
        table.add_row(key, *cells)
    console.print(table)
