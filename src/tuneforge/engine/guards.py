"""Guards around the training loop: non-finite steps skipped on the device, and signals turned into a clean stop.

>>> import torch
>>> guard = NonFiniteGuard(patience=3)
>>> for loss in (1.0, float("nan"), float("nan"), 0.5):
...     _ = guard.check(torch.tensor(loss), torch.tensor(1.0), optimizer=None)
>>> guard.read()
(2, 2)

`NonFiniteGuard.check` never synchronises with the device: it hands the fused AdamW kernel a `found_inf` flag
(the same protocol GradScaler uses), so a NaN/inf step leaves weights, moments and step counts untouched, and
keeps running counts as device tensors that the loop reads only at logging steps. `GracefulStop` turns the
first SIGTERM/SIGINT into a request the loop honours at the next step boundary (checkpoint, then exit); a
second SIGINT aborts at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import torch


class NonFiniteGuard:
    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.skipped: torch.Tensor | None = None  # skipped steps since the last read
        self.streak: torch.Tensor | None = None  # current run of consecutive skipped steps
        self.longest: torch.Tensor | None = None  # longest run since the last read
        self.total_skipped = 0

    def check(self, loss: torch.Tensor, grad_norm: torch.Tensor, optimizer: Any) -> torch.Tensor:
        """Flag this step as bad when loss or gradient norm is not finite; tell `optimizer` to skip it."""
        bad = (~(torch.isfinite(loss) & torch.isfinite(grad_norm))).float()
        if self.skipped is None:
            self.skipped, self.streak, self.longest = (torch.zeros_like(bad) for _ in range(3))
        self.skipped += bad
        self.streak = (self.streak + 1) * bad  # resets to 0 on a good step
        self.longest = torch.maximum(self.longest, self.streak)
        if optimizer is not None:
            inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
            if inner.defaults.get("fused"):
                inner.found_inf = bad  # the fused kernel skips the update on the device
            elif bool(bad):  # other optimizers: one host sync per step, then skip by hand
                optimizer.zero_grad(set_to_none=True)
        return bad

    def read(self) -> tuple[int, int]:
        """(skipped steps, longest streak) since the last read; one device sync."""
        if self.skipped is None:
            return 0, 0
        skipped, longest = int(self.skipped.item()), int(self.longest.item())
        self.total_skipped += skipped
        self.skipped.zero_()
        self.longest.copy_(self.streak)  # a streak still running carries over
        return skipped, longest

    def tripped(self, longest: int) -> bool:
        return self.patience > 0 and longest >= self.patience


class GracefulStop:
    """Context manager: SIGTERM/SIGINT set `requested` (the signal's name); a second SIGINT raises
    KeyboardInterrupt at once. Only the main thread can install handlers; elsewhere it does nothing."""

    def __init__(self, announce: Any = print) -> None:
        self.requested: str | None = None
        self.announce = announce
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = self.requested or name
        self.announce(f"{name}: stopping at the next step boundary after saving a checkpoint "
                      "(Ctrl-C again aborts at once)")

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
