"""Where a run comes from, as recorded in run.json: the host (for the liveness check), the parent run when
the base model is another run's folder, and the history of resumes."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from tuneforge.runs.record import is_run, now, read_info


def lineage(cfg: Any, info: dict[str, Any]) -> dict[str, Any]:
    """run.json fields: host, parent run, and resume history (`info`: the record so far, for a resume)."""
    out: dict[str, Any] = {"host": socket.gethostname()}
    base = Path(cfg.model.model_name_or_path or "")
    if is_run(base):  # continued from another run's folder
        parent = read_info(base)
        out["parent"] = {"id": parent.get("id"), "path": str(base.resolve()), "relation": "continued"}
    if cfg.training.resume_from_checkpoint:
        history = list(info.get("resumed_from", []))
        history.append({"checkpoint": cfg.training.resume_from_checkpoint, "at": now()})
        out["resumed_from"] = history
    return out
