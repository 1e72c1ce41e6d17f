"""Which process of a distributed run stopped, found in seconds rather than at the process-group timeout.

>>> from tuneforge.engine.watchdog import collective_failure
>>> collective_failure(RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer"))
True
>>> collective_failure(ValueError("a bug"))
False

Every process of a run beats a counter in the launcher's key-value store (the TCPStore at MASTER_ADDR:
MASTER_PORT that torchrun's agent hosts, through a connection of its own with a short timeout) every BEAT_SECONDS
and watches the others' counters. A process that ends says so first (`finish`: finished, or failed with its
one line). Two ways a lost process surfaces:

- a collective raises (gloo notices a closed connection at once): the process asks `lost()`, which waits up
  to SETTLE_SECONDS for a counter to stop or a failure to be posted, and names that rank;
- nothing raises (NCCL waits for a dead peer until its timeout; a process is frozen; a machine left the network):
  when a process's counter has not moved for `peer_timeout_seconds` (distributed.peer_timeout_seconds) and it
  did not finish, the watchdog calls `on_lost(line)` (the run is marked interrupted, one line is printed) and
  ends this process (os._exit), since the main thread may be blocked inside a collective for good.

Only the lowest-ranked live process prints (`reports`), so a lost process is announced once per run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

BEAT_SECONDS = 1.0
SETTLE_SECONDS = 5.0  # a counter still for this long (5 missed beats) after a collective failed: that rank
STORE_TIMEOUT_SECONDS = 10.0
_MARKERS = ("connection reset by peer", "connection closed by peer", "broken pipe", "gloo", "nccl",
            "socket timeout", "connection refused")


def collective_failure(err: BaseException) -> bool:
    """Whether `err` is a collective that failed because another process is gone (torch.distributed's
    DistError family, or the RuntimeError gloo raises for a closed connection)."""
    try:
        import torch.distributed as dist

        if isinstance(err, dist.DistError):
            return True
    except ImportError:  # pragma: no cover - torch is always there when this runs
        pass
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in _MARKERS)


class Watchdog:
    """Heartbeats of the run's processes in the launcher's store; see the module docstring."""

    def __init__(self, store: Any, rank: int, world: int, peer_timeout: float,
                 on_lost: Callable[[str, bool], None] | None = None) -> None:
        self.store, self.rank, self.world, self.peer_timeout = store, rank, world, peer_timeout
        self.on_lost = on_lost  # (line, this process reports it): set by the train workflow
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._beats: dict[int, tuple[int, float]] = {}  # rank -> (counter, when it last moved: monotonic)
        self.store.add(self._key("beat", rank), 1)
        self._thread = threading.Thread(target=self._run, name="tuneforge-watchdog", daemon=True)
        self._thread.start()

    def _key(self, kind: str, rank: int) -> str:
        return f"{kind}/{rank}"

    def finish(self, why: str = "finished") -> None:
        """This process ends (finished, or 'failed: <line>'): the others stop watching it. The heartbeat thread
        is joined first: a daemon thread still inside a TCPStore call when the interpreter shuts down ends the
        process with "terminate called without an active exception" (seen once in a full-suite run, in the
        2-process data-error test)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(STORE_TIMEOUT_SECONDS + BEAT_SECONDS)
        try:
            self.store.set(self._key("why", self.rank), why[:500])
            self.store.add(self._key("exit", self.rank), 1)
        except RuntimeError:  # the store's host is gone (DistStoreError): nothing left to tell
            pass

    def _poll(self) -> dict[int, str]:
        """Read every other process's counter and exit note: {rank: 'failed: ...' | 'finished'} for those done."""
        now, done = time.monotonic(), {}
        for r in range(self.world):
            if r == self.rank:
                continue
            if self.store.add(self._key("exit", r), 0):
                done[r] = self.store.get(self._key("why", r)).decode(errors="replace")
                continue
            count = self.store.add(self._key("beat", r), 0)
            with self._lock:
                last = self._beats.get(r)
                if last is None or last[0] != count:
                    self._beats[r] = (count, now)
        return done

    def _still(self, done: dict[int, str]) -> dict[int, float]:
        """Seconds since each unfinished process's counter last moved."""
        now = time.monotonic()
        with self._lock:
            return {r: now - t for r, (_, t) in self._beats.items() if r not in done}

    def reports(self, gone: set[int]) -> bool:
        """Whether this process is the lowest-ranked one still alive (it prints the line)."""
        return all(r in gone for r in range(self.rank))

    def lost(self) -> tuple[str, bool, bool]:
        """After a collective failed: (the line naming the process that stopped, whether this process prints it,
        whether one was found)."""
        deadline = time.monotonic() + SETTLE_SECONDS + BEAT_SECONDS
        while time.monotonic() < deadline:
            try:
                done = self._poll()
            except RuntimeError:  # DistStoreError, a closed connection
                return ("the launcher's key-value store (on the first node) is gone: the first node's launcher or "
                        "machine stopped", _first_on_node(), True)
            failed = {r: why for r, why in done.items() if why.startswith("failed")}
            if failed:
                r = min(failed)
                return f"process rank {r} of {self.world} {failed[r]}", self.reports({r}), True
            still = {r: s for r, s in self._still(done).items() if s >= SETTLE_SECONDS}
            if still:
                r = min(still)
                return (f"process rank {r} of {self.world} stopped without a word (killed, out of memory, or its "
                        "machine left)", self.reports(set(still)), True)
            time.sleep(BEAT_SECONDS / 2)
        return (f"another process of this run stopped (rank {self.rank} of {self.world} saw a collective fail)",
                self.rank == 0, False)

    def _run(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            try:
                self.store.add(self._key("beat", self.rank), 1)
                done = self._poll()
            except RuntimeError:  # DistStoreError, a closed connection
                line = ("the launcher's key-value store (on the first node) stopped answering: the first node's "
                        "launcher or machine is gone")
                self._give_up(line, _first_on_node())
                return
            late = {r: s for r, s in self._still(done).items() if s >= self.peer_timeout}
            if late:
                r = min(late)
                self._give_up(f"process rank {r} of {self.world} has not answered for {late[r]:.0f} s (hung, frozen, "
                              "or its machine left; distributed.peer_timeout_seconds sets the limit)",
                              self.reports(set(late)))
                return

    def _give_up(self, line: str, reports: bool) -> None:
        if self._stop.is_set():
            return
        try:
            if self.on_lost is not None:
                self.on_lost(line, reports)
        finally:
            os._exit(1)


def _first_on_node() -> bool:
    """Without the store nothing tells which processes live: the first process of each machine speaks."""
    return os.environ.get("LOCAL_RANK", "0") == "0"


def start_watchdog(rank: int, world: int, peer_timeout: float) -> Watchdog | None:
    """A watchdog on the launcher's store (MASTER_ADDR/MASTER_PORT, as torchrun and accelerate launch set
    them), or None where there is none to reach."""
    import datetime as dt

    import torch.distributed as dist

    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT", "")
    if not host or not port.isdigit():
        return None
    run = f"{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    try:
        client = dist.TCPStore(host, int(port), is_master=False,
                               timeout=dt.timedelta(seconds=STORE_TIMEOUT_SECONDS), wait_for_workers=False)
    except (RuntimeError, ValueError):
        return None
    return Watchdog(dist.PrefixStore(f"tuneforge/{run}", client), rank, world, peer_timeout)
