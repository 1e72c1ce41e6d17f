"""The training processes of one run: who is the main process, and the few collective steps the engine and
the train workflow need, all through accelerate (torch.distributed underneath; nothing home-made).

>>> from tuneforge.engine.distributed import current, launched
>>> launched({}), current().world          # a plain process: one process, its own main
(False, 1)

A run is distributed when a launcher set WORLD_SIZE > 1 (`torchrun`, `accelerate launch`, `tuneforge train
--nproc N`). Decisions are made once, on the main process, and copied to the others (`on_main`); work whose
result others can reuse (tokenizing into the shared cache, loading a hub model into its cache) runs on the main
process first (`main_first`). A user error on the main process is raised on every process with the same line
(marked `shared`, so the CLI prints it once), never left as a hang.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tuneforge.errors import UserError

T = TypeVar("T")


def launched(env: Mapping[str, str] | None = None) -> bool:
    """Whether a launcher started this process as one of several (WORLD_SIZE > 1); reads no torch."""
    env = os.environ if env is None else env
    try:
        return int(env.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise UserError(f"WORLD_SIZE: not a number ({env.get('WORLD_SIZE')!r}); it is set by the launcher "
                        "(torchrun, accelerate launch)") from None


def env_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's global rank as the launcher set it (0 when not launched); reads no torch."""
    env = os.environ if env is None else env
    value = env.get("RANK", "0")
    return int(value) if value.isdigit() else 0


@dataclass(frozen=True)
class Processes:
    """This process's place among the run's processes; every method is a no-op for a single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def broadcast(self, value: Any) -> Any:
        """The main process's `value` on every process (pickled)."""
        if not self.distributed:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value], from_process=0)[0]

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order, on every process (pickled)."""
        if not self.distributed:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def barrier(self) -> None:
        if self.distributed:
            from accelerate.state import PartialState

            PartialState().wait_for_everyone()

    def on_main(self, fn: Callable[[], T]) -> T:
        """fn() on the main process only; its result (or its user error) on every process."""
        if not self.distributed:
            return fn()
        outcome: tuple[Any, Any] = (None, None)
        if self.is_main:
            try:
                outcome = (fn(), None)
            except UserError as err:
                self.broadcast((None, (type(err), str(err))))
                raise
            except BaseException as err:  # a bug or an interrupt: the others stop too, with one line
                self.broadcast((None, (UserError, f"the main process failed: {type(err).__name__}: "
                                                  f"{str(err).splitlines()[0] if str(err) else ''}")))
                raise
        result, error = self.broadcast(outcome)
        if error is not None:
            raise _shared(*error)
        return result

    def main_first(self, fn: Callable[[], T]) -> T:
        """fn() on the main process, then on the others (which then find what it cached); a user error on the
        main process is raised on every process and the others never run fn."""
        if not self.distributed:
            return fn()
        done: list[T] = []  # only the outcome travels, never the result (a model, a tokenized split)
        self.on_main(lambda: done.append(fn()))
        return done[0] if self.is_main else fn()

    def all_ok(self, fn: Callable[[], T]) -> T:
        """fn() on every process; a user error on any of them is raised on all (a collective, so no process
        waits for one that failed)."""
        if not self.distributed:
            return fn()
        result, local = None, None
        try:
            result = fn()
        except UserError as err:
            local = err
        errors = [e for e in self.gather(None if local is None else (type(local), str(local))) if e is not None]
        if local is not None:
            raise local
        if errors:
            raise _shared(*errors[0])
        return result


def _shared(cls: type[UserError], message: str) -> UserError:
    err = cls(message)
    err.shared = True  # raised here because another process raised it: the CLI prints it there
    return err


def current() -> Processes:
    """The processes of the running session: accelerate's state when a process group exists, else one."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Processes()
    from accelerate.state import PartialState

    state = PartialState()
    return Processes(state.process_index, state.num_processes, state.local_process_index)


def start_processes(cuda: bool, timeout_minutes: float = 30.0) -> Processes:
    """Join the process group the launcher prepared (gloo on the CPU, never MPI; NCCL on GPUs) and return this
    process's place in it; a single process when not launched. `cuda`: the device the session will pick, so that
    accelerate's one-device-per-process state agrees with it (engine/session.py); `timeout_minutes`: how long a
    collective waits (distributed.timeout_minutes)."""
    if not launched():
        return Processes()
    import datetime as dt

    import torch.distributed as dist
    from accelerate.state import PartialState

    if not dist.is_initialized():
        try:
            PartialState(cpu=not cuda, timeout=dt.timedelta(minutes=timeout_minutes),
                         **({} if cuda else {"backend": "gloo"}))
        except (RuntimeError, ValueError) as err:
            raise UserError(f"distributed start failed ({str(err).splitlines()[0][:160]}); check MASTER_ADDR/"
                            "MASTER_PORT (or --rdzv_endpoint) and that every node reaches it (docs/distributed.md)"
                            ) from None
    return current()


def release_at_exit() -> None:
    """Destroy the default process group when the interpreter exits (atexit runs while it is still whole). A
    process that ends with gloo's group alive can abort in finalization (SIGABRT, "terminate called without an
    active exception", exit -6 instead of the run's 0 or 2): measured 3 in 12 two-process torchrun runs of a bare
    all_reduce, 0 in 12 with the group destroyed. Only for a process whose collectives all completed (a finished
    run, an error every process raised): with a peer gone, destroying could wait on work that never ends, so a
    lost peer's path leaves the group alone (as torchtitan does). Registered once however often it is called."""
    import atexit

    atexit.unregister(_destroy_process_group)
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
