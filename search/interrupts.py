"""Ctrl-C and SIGTERM (what a batch scheduler sends) during a study: both stop the running
trial the same way, so that it is marked failed, its MLflow run KILLED, and the study resumes.

Lightning turns a KeyboardInterrupt inside `fit` into `exit(1)`, which Optuna does not see as
a failed trial, and only notes a SIGTERM: our handlers raise `Interrupted`, which both let
through, and the study turns it into the KeyboardInterrupt that Optuna fails a trial on.

A stop raised in the middle of a database call can leave SQLite locked, and then the run it
stopped could not be marked KILLED: such calls run `deferred`, and the stop is raised as they end."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(BaseException):
    """The process was asked to stop by `signum`; it exits with 128 + signum, as a shell reports."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code(error: BaseException) -> int:
    """130 for Ctrl-C, 143 for SIGTERM, whether the stop arrives as such or as Optuna re-raises it."""
    cause = error if isinstance(error, Interrupted) else error.__cause__
    return cause.exit_code if isinstance(cause, Interrupted) else 128 + signal.SIGINT


def signal_name(stop: BaseException) -> str:
    """SIGINT or SIGTERM: the signal that stopped the process, as `exit_code` reads it."""
    return signal.Signals(exit_code(stop) - 128).name


_deferring = 0  # how many `deferred` blocks the main thread is in
_pending: list[int] = []  # signals that arrived inside them


def _raise(signum: int, frame: object) -> None:
    if _deferring:
        _pending.append(signum)
        return
    raise Interrupted(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """A stop that arrives inside the block is raised when the block ends, not in its middle.

    Signal handlers run in the main thread, so only its blocks defer; elsewhere this does nothing."""
    global _deferring
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending:
            signum = _pending[0]
            _pending.clear()
            raise Interrupted(signum)


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` inside the block."""
    previous = {signum: signal.signal(signum, _raise) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
