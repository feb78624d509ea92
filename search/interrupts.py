"""Ctrl-C and SIGTERM (what a batch scheduler sends) during a study: both stop the running
trial the same way, so that it is marked failed, its MLflow run KILLED, and the study resumes.

Lightning turns a KeyboardInterrupt inside `fit` into `exit(1)`, which Optuna does not see as
a failed trial, and only notes a SIGTERM: our handlers raise `Interrupted`, which both let
through, and the study turns it into the KeyboardInterrupt that Optuna fails a trial on."""

from __future__ import annotations

import signal
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


def _raise(signum: int, frame: object) -> None:
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
