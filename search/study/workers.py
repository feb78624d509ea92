"""A study's parallel local workers: `nar study worker` processes on its storage, watched until
they end. The trial of a worker that dies is failed and queued again; a stop (Ctrl-C, SIGTERM)
reaches every worker, which fails its own trial and ends its run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import optuna
import yaml

from nar_search.search.config import StudyConfig
from nar_search.search.interrupts import Interrupted, exit_code
from nar_search.search.study.recovery import RECOVERY_SECONDS, Recovery, recover
from nar_search.search.tracking import Tracker

POLL_SECONDS = 0.5
STOP_SECONDS = 120  # a worker's grace to fail its trial and end its run on SIGTERM before it is killed


@dataclass(frozen=True)
class DeadWorker:
    """A worker that ended with an error, and what recovery did about its trial."""

    pid: int
    returncode: int
    log: Path
    recovery: Recovery

    @property
    def how(self) -> str:
        return f"killed by {signal.Signals(-self.returncode).name}" if self.returncode < 0 else f"exit {self.returncode}"

    @property
    def last_line(self) -> str:
        return (self.log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1][:200]


class Workers:
    """`config.workers` worker processes for the time of a `with` block, each logging to
    runs/<study>/worker-N.log."""

    def __init__(self, config: StudyConfig) -> None:
        self.config = config
        self.logs = [Path("runs") / config.name / f"worker-{index}.log" for index in range(config.workers)]
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Workers:
        settings = json.loads(self.config.model_dump_json())
        self.logs[0].parent.mkdir(parents=True, exist_ok=True)
        try:
            self._start(settings)
        except BaseException:  # none left running unwatched
            self._stop(signal.SIGTERM)
            raise
        return self

    def _start(self, settings: dict[str, object]) -> None:
        for index, log in enumerate(self.logs):
            # A sampler seed each, as samplers seeded alike propose the same points; but not for the
            # grid, whose seed orders the grid that every worker's grid ids index.
            offset = 0 if self.config.sampler == "grid" else index
            seed = None if self.config.sampler_seed is None else self.config.sampler_seed + offset
            # The settings go through the worker's standard input, never a file: they may hold a password.
            # Logs go to files, not pipes: an unread pipe fills up and stalls its worker.
            process = subprocess.Popen(
                [sys.executable, "-m", "nar_search.search.cli", "study", "worker", "-", "--no-recover", "--no-finish"],
                stdin=subprocess.PIPE,
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
            )
            assert process.stdin is not None  # asked for above
            self.processes.append(process)
            process.stdin.write(yaml.safe_dump(settings | {"sampler_seed": seed}).encode())
            process.stdin.close()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        if error is not None and isinstance(error, (KeyboardInterrupt, Interrupted)):
            self._stop(signal.Signals(exit_code(error) - 128))  # Ctrl-C reaches them as Ctrl-C, SIGTERM as SIGTERM

    def watch(self, study: optuna.Study, tracker: Tracker, on_tick: Callable[[], None], on_death: Callable[[DeadWorker], None]) -> None:
        """Until every worker has ended: a worker that dies has its trial failed and queued again
        (`on_death` is told), and trials that heartbeats failed on other machines are recovered."""
        ended: set[int] = set()
        checked = time.monotonic()
        while len(ended) < len(self.processes):
            for index, process in enumerate(self.processes):
                if index not in ended and process.poll() is not None:
                    ended.add(index)
                    if process.returncode != 0:
                        on_death(DeadWorker(process.pid, process.returncode, self.logs[index], recover(study, tracker)))
            if time.monotonic() - checked > RECOVERY_SECONDS:
                recover(study, tracker, requeue_failed=False)
                checked = time.monotonic()
            on_tick()
            time.sleep(POLL_SECONDS)

    def _stop(self, signum: signal.Signals) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signum)  # each worker fails its own trial and ends its run
        for process in self.processes:
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
