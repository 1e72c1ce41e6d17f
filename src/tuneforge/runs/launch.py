"""`tuneforge train --nproc N`: the same command in N processes on this machine, started by torchrun's own
launcher (torch.distributed.launcher), so that `tuneforge train --nproc 2 run.yaml` equals
`torchrun --nproc_per_node 2 -m tuneforge train run.yaml`.

>>> from tuneforge.runs.launch import launch_local
>>> launch_local(2, ["train", "run.yaml"])       # doctest: +SKIP
0

The processes rendezvous on a free loopback port; their output goes straight to the terminal (the main one
prints, the others are quiet: engine/distributed.py). The exit code is the processes' own: 2 after a user
error (printed once, by the main process), 128 + signal after an interrupt. Multi-node runs use torchrun or
accelerate launch directly (docs/distributed.md).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from pathlib import Path

from tuneforge.errors import UserError


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_local(nproc: int, argv: list[str]) -> int:
    """Run `python -m tuneforge ARGV` in `nproc` processes on this machine; returns their exit code."""
    from tuneforge.engine.distributed import launched

    if nproc < 1:
        raise UserError(f"--nproc: must be at least 1, got {nproc}")
    if launched():
        raise UserError("--nproc: this process was already started by a launcher (WORLD_SIZE is set); drop --nproc "
                        "or the launcher")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # torchrun's own default: one thread per process unless told (processes sharing cores slow each other
    # down badly: docs/PITFALLS.md), and gloo on the loopback interface, which always joins one machine
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    if Path("/sys/class/net/lo").exists():
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    # torch's C++ warnings with stack frames (a TCPStore connection lost when the launcher stops) would follow
    # the one line the watchdog prints (engine/watchdog.py); errors still show
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    # the launcher logs each failed process at length; the processes have printed the one line that matters
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex[:12],
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}", max_restarts=0,
                          monitor_interval=0.5)
    try:
        elastic_launch(config, sys.executable)("-m", "tuneforge", *argv)
    except ChildFailedError as err:
        codes = {rank: failure.exitcode for rank, failure in err.failures.items()}
        return codes.get(0) or next((c for c in codes.values() if c > 0), 1)
    return 0
