"""Errors a user can cause: one clear line, exit code 2, never a traceback.

>>> from tuneforge.errors import UserError
>>> str(UserError("data.train_file: file not found: 'x.csv'"))
"data.train_file: file not found: 'x.csv'"

Anything else that escapes is a bug in tuneforge and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (config, data, paths). The CLI prints it as one line, exit 2."""

    exit_code = 2
    # raised on this process because another process of a distributed run raised it (the main process prints
    # it; the others exit quietly with the same code): engine/distributed.py
    shared = False


class ConfigError(UserError):
    """Unknown key, wrong type or invalid value in the run configuration."""


class DataError(UserError):
    """Unreadable, malformed or unusable training data."""


class Interrupted(Exception):
    """Training stopped by SIGTERM/SIGINT after saving a checkpoint; the run is marked interrupted.
    Exit code 128 + the signal number, as a shell reports a process ended by that signal."""

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        import signal

        self.exit_code = 128 + int(signal.Signals[signal_name])


class Diverged(UserError):
    """Too many consecutive optimizer steps with a non-finite loss or gradient."""


class PeerLost(Exception):
    """Another process of a distributed run stopped (killed, crashed, hung, its machine gone): the run is marked
    interrupted and resumes from its last checkpoint. One line, printed by one process (`shared` on the others:
    engine/watchdog.py), exit code 1."""

    exit_code = 1

    def __init__(self, message: str, shared: bool = False) -> None:
        super().__init__(message)
        self.shared = shared
