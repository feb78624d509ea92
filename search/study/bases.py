"""The base network: what every trial after the baseline starts from and learns from."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from nar_search.lightning_modules.distillation import TeacherTargets
from nar_search.lightning_modules.errors import TrainingError
from nar_search.models.base_network import BaseNetwork, load_base
from nar_search.models.weights import WEIGHTS_FILE, file_sha256
from nar_search.search.config import StudyConfig
from nar_search.search.study.opening import original_network
from nar_search.search.study.record import StudyRecord, TrialRecord
from nar_search.search.study.recovery import RECOVERY_SECONDS, awaiting_retry, requeue, worker_gone
from nar_search.search.tracking import Tracker

POLL_SECONDS = 2.0


class BaseProvider:
    """The study file's base, or the one the baseline trial trained (on this worker or on
    another), and its teacher for distillation, computed once per process."""

    def __init__(self, config: StudyConfig, study: optuna.Study, tracker: Tracker, given: BaseNetwork | None) -> None:
        self.config, self.study, self.tracker = config, study, tracker
        self.original = original_network(config, given)
        self.base = given or self._stored()
        self._teacher: TeacherTargets | None = None

    def keep(self, run_dir: Path, run_id: str) -> None:
        """The baseline trained the base in `run_dir`, logged in MLflow run `run_id`: every later
        trial, on any worker, starts from it (from that folder, or where the folder is not, from
        that run)."""
        self.base = load_base(run_dir, self.config.model, self.original.input_size)
        weights = file_sha256(run_dir / WEIGHTS_FILE)
        StudyRecord(base_network=str(run_dir.resolve()), base_sha256=weights, base_run_id=run_id).write(self.study)

    def wait(self, number: int) -> BaseNetwork:
        """The base for trial `number`, waiting while another worker's baseline trains it. A
        baseline that no worker trains (its worker died, its retry waits in the queue) gets this
        worker: the trial gives way, queued again behind the baseline's retry, before any training.
        A baseline whose worker died is waited for while recovery queues it again."""
        orphan_deadline = None
        while self.base is None:
            self.base = self._stored()
            if self.base is not None:
                break
            trials = self.study.get_trials(deepcopy=False)
            baselines = [t for t in trials if TrialRecord.of(t).baseline]
            if any(t.state == TrialState.RUNNING and not worker_gone(t) for t in baselines):
                pass  # another worker trains it
            elif any(t.state == TrialState.WAITING for t in baselines):
                requeue(self.study, next(t for t in trials if t.number == number))
                raise TrainingError(f"trial {number} gave way to the untrained baseline and is queued again")
            elif any(awaiting_retry(t, trials) for t in baselines):
                orphan_deadline = orphan_deadline or time.monotonic() + 2 * RECOVERY_SECONDS
                if time.monotonic() > orphan_deadline:
                    raise TrainingError("the study's baseline lost its worker and nothing queued it again: run the study again to retry it")
            else:
                raise TrainingError("the study's baseline failed, so there is no base to start from: run the study again to retry it")
            time.sleep(POLL_SECONDS)
        return self.base

    def teacher(self, number: int) -> TeacherTargets:
        """The base as a teacher, for the whole process: its logits are computed once per split."""
        if self._teacher is None:
            base = self.wait(number)
            self._teacher = TeacherTargets(base.build(), base.spec.input_size)
        return self._teacher

    def _stored(self) -> BaseNetwork | None:
        """The base a baseline trial of this study trained, here or on another worker."""
        record = StudyRecord.of(self.study)
        if record.base_network is None:
            return None
        folder = Path(record.base_network)
        if not folder.is_dir() and record.base_run_id is not None:  # trained on another machine
            folder = self._fetched(record.base_run_id)
        weights = folder / WEIGHTS_FILE
        if record.base_sha256 is not None and weights.is_file() and file_sha256(weights) != record.base_sha256:
            raise TrainingError(
                f"the base network in {folder} is not the one the study's baseline trained (its checksum differs): "
                "move that folder away and run the worker again"
            )
        return load_base(folder, self.config.model, self.original.input_size)

    def _fetched(self, run_id: str) -> Path:
        """The base from the baseline's MLflow run, for a worker on a machine without its folder:
        kept in runs/NAME/base-RUN/ for the worker's later trials (and the other workers here)."""
        cache = Path("runs") / self.config.name / f"base-{run_id}"
        if cache.is_dir():
            return cache
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
        try:
            self.tracker.download_network(run_id, staging)
            os.replace(staging, cache)
        except OSError:
            if not cache.is_dir():  # else another worker here put its copy in place first
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return cache
