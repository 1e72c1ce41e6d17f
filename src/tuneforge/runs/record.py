"""The run record: `Run`, the one resolver of run references, and the one reader/writer of run.json.

>>> from tuneforge.runs.record import resolve
>>> run = resolve("runs/20261126-070000-classification-bert")     # doctest: +SKIP
>>> run = resolve("bert", require=None)      # unique part of an id under ./runs, any status   # doctest: +SKIP
>>> run.info["status"], run.metrics["eval"]                       # doctest: +SKIP

A run folder holds: the model and tokenizer (plain `from_pretrained` works), run.json (id, status, task,
base model and revision, data fingerprint, versions, the engine's choices: auto batch size, lr_find, an
evaluation batch halved after out-of-memory), run_config.yaml (resolved config), metrics.json,
metrics.jsonl, data_report.json/.txt, logs/ (TensorBoard) and checkpoints/. Status goes
running -> finished only after everything is written; failures leave failed or interrupted.

**Resolving a reference** (`resolve`, used by every command that takes a RUN): in order,
1. a folder holding run.json, as given;
2. `ROOT/REF` holding run.json (ROOT is ./runs unless the command's `--root` says otherwise);
3. the one run under ROOT whose folder name starts with REF, else the one whose name contains REF.
More than one match at the first rule that matches at all is an error that lists them; so is none. A
reference with a path separator is only ever a path (rules 1-2). Then `require` checks the recorded
status: "finished" (predict, evaluate, export, serve, report, push) or None (any status: `runs show`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig, load_config
from tuneforge.errors import UserError

RUNS_ROOT = Path("runs")
RUN_JSON = "run.json"
FINISHED = "finished"


def now() -> str:
    """UTC now, ISO 8601 to the second: every timestamp in run.json and the files written next to it."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, data: Any) -> None:
    """Write atomically (temporary file, then rename): a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The parsed file, or None when it does not exist."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def read_log(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as a list of records (a line cut short by a crash is skipped); [] when missing."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def is_run(folder: str | os.PathLike) -> bool:
    return (Path(folder) / RUN_JSON).is_file()


def read_info(folder: str | os.PathLike) -> dict[str, Any]:
    """run.json of `folder` (raises OSError/ValueError when it is missing or being written)."""
    return json.loads((Path(folder) / RUN_JSON).read_text(encoding="utf-8"))


def write_info(folder: str | os.PathLike, info: dict[str, Any]) -> None:
    write_json(Path(folder) / RUN_JSON, info)


@dataclass
class Run:
    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def info(self) -> dict[str, Any]:
        return read_info(self.path)

    @property
    def status(self) -> str | None:
        """The recorded status (registry/liveness.py tells a silently dead 'running' run apart)."""
        return self.info.get("status")

    @property
    def metrics(self) -> dict[str, Any]:
        return read_json(self.path / "metrics.json") or {}

    @property
    def config(self) -> RunConfig:
        """The resolved config the run trained with (run_config.yaml)."""
        import yaml

        return load_config(yaml.safe_load((self.path / "run_config.yaml").read_text()))

    def update(self, **fields: Any) -> None:
        write_info(self.path, {**self.info, **fields, "updated_at": now()})

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def find(ref: str | os.PathLike, root: str | os.PathLike = RUNS_ROOT) -> Path:
    """The run folder `ref` names (rules 1-3 of the module docstring), any status."""
    text, root = str(ref), Path(root)
    for candidate in (Path(ref), root / text):
        if is_run(candidate):
            return candidate
    if text and os.sep not in text and "/" not in text and root.is_dir():
        names = sorted(p.name for p in root.iterdir() if is_run(p))
        for matches in ([n for n in names if n.startswith(text)], [n for n in names if text in n]):
            if len(matches) == 1:
                return root / matches[0]
            if matches:
                shown = ", ".join(matches[:5]) + (f" and {len(matches) - 5} more" if len(matches) > 5 else "")
                raise UserError(f"RUN: {text!r} matches {len(matches)} runs under {root} ({shown}); give more of "
                                "the id, or the run folder")
    raise UserError(f"RUN: {text!r} is not a tuneforge run folder (no run.json) and names no run under {root}; "
                    "pass the folder printed at the end of training (`tuneforge runs list` shows them)")


def resolve(ref: str | os.PathLike | Run, root: str | os.PathLike = RUNS_ROOT,
            require: str | None = FINISHED) -> Run:
    """The Run that `ref` names (see the module docstring); `require` is the status it must have, or None."""
    run = ref if isinstance(ref, Run) else Run(find(ref, root))
    status = run.status
    if require is not None and status != require:
        if require == FINISHED:
            raise UserError(f"RUN: {run.path} has status {status!r}, not finished; its model is incomplete "
                            "(resume it with resume_from_checkpoint=auto)")
        raise UserError(f"RUN: {run.path} has status {status!r}, not {require}")
    return run
