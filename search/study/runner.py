"""A NAR Search study: Optuna over reduction parameters, each trial a trained network recorded
as a child MLflow run of the study's parent run, the Pareto front kept current.

The parts, one job each: `BaseProvider` (the base every trial starts from), `Objective` (one
trial: ask, build, train or reuse, return), `TrialExecutor` (a request trained in its run),
`twins` (one network trained once), `FrontPublisher` (the front where users look). Optuna's own
`optimize` runs the loop: it fails a trial on an error or Ctrl-C, and on PostgreSQL keeps the
heartbeat by which other workers tell a dead worker's trial."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import OperationalError

from nar_search.models.base_network import BaseNetwork
from nar_search.search.config import StudyConfig
from nar_search.search.errors import StudyConfigError
from nar_search.search.front.publisher import FrontPublisher
from nar_search.search.study.bases import BaseProvider
from nar_search.search.study.confirmation import Confirmation
from nar_search.search.study.objective import Objective
from nar_search.search.study.record import StudyRecord
from nar_search.search.study.recovery import SETTLE_SECONDS, awaiting_retry, recover, requeue, this_worker, worker_alive
from nar_search.search.study.status import counted, infeasible_draw, infeasible_draws
from nar_search.search.tracking import Tracker
from nar_search.search.urls import hide_password

POLL_SECONDS = 0.5
STORAGE_PATIENCE_SECONDS = 300  # how long a worker waits for its study's database to come back
PARENT_SECONDS = 60  # how long a worker waits for the study's maker to make the parent run
INFEASIBLE_DRAWS_PER_TRIAL = 10  # beyond that many per trial asked for, a study stops short: its space is too wide


class StudyRunner:
    """A study's parts, put together for one worker."""

    def __init__(self, config: StudyConfig, study: optuna.Study, tracker: Tracker, base: BaseNetwork | None = None) -> None:
        self.config, self.study, self.tracker = config, study, tracker
        self.parent_run_id = parent_run(config, study, tracker)
        self.bases = BaseProvider(config, study, tracker, base)
        self.objective = Objective(config, study, tracker, self.parent_run_id, self.bases)
        self.publisher = FrontPublisher(config.name, tracker, self.parent_run_id)

    def optimize(self, callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = ()) -> None:
        """Runs trials until the study holds its number of judged candidates and no retry waits.
        A storage that goes away for a while (a database restart) is waited for; the trial it
        cut short is failed and queued again."""
        while True:
            waiting = len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            remaining = max(self.config.n_trials - counted(self.study), waiting)
            if remaining <= 0 or out_of_draws(self.study, self.config.n_trials):
                return
            budget = TrialBudget(self.config.n_trials, remaining)
            try:
                self.study.optimize(self.objective, catch=(Exception,), callbacks=[budget, self.publisher, *callbacks])
                return
            except Exception as error:
                if not _storage_unreachable(error):
                    raise
            self._wait_for_storage()
            cut_short = set(recover(self.study, self.tracker, requeue_failed=False, stopping=True).orphans)
            for trial in self.study.get_trials(deepcopy=False):
                if trial.number in cut_short:
                    requeue(self.study, trial)

    def _wait_for_storage(self) -> None:
        deadline = time.monotonic() + STORAGE_PATIENCE_SECONDS
        while True:
            time.sleep(SETTLE_SECONDS)
            try:
                self.study.get_trials(deepcopy=False)
                return
            except Exception as error:
                if not _storage_unreachable(error) or time.monotonic() > deadline:
                    raise StudyConfigError(
                        f"the study storage {hide_password(self.config.storage_url)} has not answered for "
                        f"{STORAGE_PATIENCE_SECONDS} s: run the worker again once it is back"
                    ) from None

    def settle(self) -> None:
        """Waits until no trial runs anywhere. A trial whose worker died (on this machine: its
        process is gone; on another, with PostgreSQL: its heartbeat went stale) is failed,
        queued again once, and trained here; so a study whose worker was killed still ends."""
        while True:
            recover(self.study, self.tracker, requeue_failed=False)
            optuna.storages.fail_stale_trials(self.study)  # a heartbeat storage's; its callback queues them again
            trials = self.study.get_trials(deepcopy=False)
            for trial in trials:  # failed for a worker that died or was stopped, and not queued again yet
                if trial.state == TrialState.FAIL and awaiting_retry(trial, trials):
                    requeue(self.study, trial)
            waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if waiting and not out_of_draws(self.study, self.config.n_trials):
                self.optimize()
            elif not self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return
            else:
                time.sleep(SETTLE_SECONDS)

    def finish(self) -> None:
        """The study's end, by whichever worker gets there: its front published and its parent
        run ended FINISHED (others doing the same meanwhile do no harm)."""
        self.publish()
        self.tracker.client.set_terminated(self.parent_run_id, "FINISHED")

    def start(self) -> None:
        """The parent run RUNNING, held by this process: should it vanish, a worker that finishes ends the run."""
        self.tracker.client.update_run(self.parent_run_id, status="RUNNING")
        StudyRecord(runner=this_worker()).write(self.study)

    def confirmation(self) -> Confirmation:
        """The front's points trained again over the study's `confirm.seeds`."""
        return Confirmation(self.config, self.study, self.tracker, self.parent_run_id, self.bases)

    def publish(self) -> None:
        """The front's artifacts with every trained point, as the study stands."""
        self.publisher.publish(self.study)


def parent_run(config: StudyConfig, study: optuna.Study, tracker: Tracker) -> str:
    """The study's parent MLflow run (the study's settings, its front), made by the process that
    made the study: the others wait for it, so that workers starting together make one. Should
    that process have stopped first, the worker that waited in vain makes it."""
    record = StudyRecord.of(study)
    deadline = time.monotonic() + PARENT_SECONDS

    def maker_at_work() -> bool:  # a maker that is gone, or unknown (an older study), makes nothing
        return record.creator not in (None, this_worker()) and worker_alive(record.creator) is not False

    while record.mlflow_parent_run_id is None and maker_at_work() and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        record = StudyRecord.of(study)
    if record.mlflow_parent_run_id is not None:
        return record.mlflow_parent_run_id
    experiment = tracker.experiment_id(config.name)
    run_id = cast(str, tracker.client.create_run(experiment, run_name=f"study {config.name}", tags={"nar.role": "study"}).info.run_id)
    tracker.log_params(
        run_id,
        {
            "model": config.model,
            "sampler": config.sampler,
            "objective": config.objective,
            "n_trials": config.n_trials,
            "storage": hide_password(config.storage_url),
            "search": config.search.model_dump(mode="json"),
        },
    )
    tracker.log_files(run_id, {"study_config.json": json.dumps(config.masked(), indent=2)})
    StudyRecord(mlflow_parent_run_id=run_id).write(study)
    return run_id


@dataclass
class TrialBudget:
    """Stops a study once this process has run `remaining` trials (failed ones too, so that a
    failing study ends) or the study holds its `n_trials`. Infeasible draws cost nothing and do
    not count, until there are `INFEASIBLE_DRAWS_PER_TRIAL` times `n_trials` of them."""

    n_trials: int
    remaining: int

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.remaining -= not infeasible_draw(trial)
        if self.remaining <= 0 or counted(study) >= self.n_trials or out_of_draws(study, self.n_trials):
            study.stop()


def _storage_unreachable(error: BaseException | None) -> bool:
    """An error that the storage's database going away causes, anywhere in its chain (Optuna
    may raise another error while handling it)."""
    while error is not None:
        if isinstance(error, (optuna.exceptions.StorageInternalError, OperationalError)):
            return True
        error = error.__cause__ or error.__context__
    return False


def out_of_draws(study: optuna.Study, n_trials: int) -> bool:
    """Whether the space gave so many infeasible draws that the study stopped short: it is too wide."""
    return infeasible_draws(study) >= INFEASIBLE_DRAWS_PER_TRIAL * n_trials
