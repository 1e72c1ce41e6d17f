"""Is a run recorded as running still alive? The heartbeat it writes, and the status to show for it.

While training, a daemon thread touches `<run>/.heartbeat` every minute. A run recorded as running is shown
as interrupted when its process is gone (same host: pid check) or its heartbeat is older than STALE_SECONDS
(any host, e.g. a shared filesystem).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from tuneforge.runs.record import now, read_info

HEARTBEAT = ".heartbeat"
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 15 * 60.0


def start_heartbeat(run_dir: Path, interval: float = HEARTBEAT_SECONDS) -> threading.Thread:
    """Touch run_dir/.heartbeat every `interval` seconds until run.json stops saying running (or the process
    exits: the thread is a daemon). It never writes run.json, so it cannot race the status updates."""
    pid = os.getpid()
    beat = run_dir / HEARTBEAT

    def loop() -> None:
        while True:
            beat.write_text(now() + "\n", encoding="utf-8")
            time.sleep(interval)
            try:
                info = read_info(run_dir)
            except (OSError, ValueError):
                return
            if info.get("status") != "running" or info.get("pid") != pid:
                return

    thread = threading.Thread(target=loop, name=f"tuneforge-heartbeat-{run_dir.name}", daemon=True)
    thread.start()
    return thread


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


def effective_status(run_dir: Path, info: dict[str, Any], at: float | None = None) -> str:
    """The recorded status, except that a 'running' run whose process is gone is 'interrupted'."""
    status = info.get("status", "unknown")
    if status != "running":
        return status
    if info.get("host") == socket.gethostname() and info.get("pid") and not _pid_alive(int(info["pid"])):
        return "interrupted"
    if (at or time.time()) - last_sign_of_life(run_dir, info) > STALE_SECONDS:
        return "interrupted"
    return "running"
