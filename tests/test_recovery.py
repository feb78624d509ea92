"""Recovery on its own: a trial whose worker is gone is failed and queued again exactly once,
and until then the trials that wait on it can tell it will be retried."""

import socket
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

from nar_search.search.study.record import TrialRecord
from nar_search.search.study.recovery import awaiting_retry, recover, this_worker, unresolved_failures
from nar_search.search.tracking import Tracker


def dead_worker() -> dict[str, object]:
    process = subprocess.Popen(["true"])
    process.wait()  # reaped: its pid names no process now
    return {"host": socket.gethostname(), "pid": process.pid, "started": "1"}


PHI = {"phi": optuna.distributions.FloatDistribution(0, 3)}


def running_trial(study: optuna.Study, owner: dict[str, object]) -> optuna.trial.FrozenTrial:
    trial = study.ask(PHI)
    TrialRecord(worker=owner).write(trial)
    return study._storage.get_trial(trial._trial_id)


@pytest.mark.slow
def test_a_dead_workers_trial_awaits_its_retry_until_recovery_queues_it_once(tmp_path):
    study = optuna.create_study()
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")  # untouched: these trials have no MLflow run
    alive, orphan = running_trial(study, this_worker()), running_trial(study, dead_worker())
    trials = study.get_trials(deepcopy=False)
    assert not awaiting_retry(alive, trials) and awaiting_retry(orphan, trials)

    recover(study, tracker, requeue_failed=False)
    trials = study.get_trials(deepcopy=False)
    assert trials[orphan.number].state == TrialState.FAIL and trials[alive.number].state == TrialState.RUNNING
    assert TrialRecord.of(trials[orphan.number]).failure.startswith("worker gone")  # Optuna's storage calls, as recovery.py uses them
    assert awaiting_retry(trials[orphan.number], trials)  # failed, but nothing queued it yet
    assert unresolved_failures(study) == [orphan.number]

    assert recover(study, tracker).requeued == [orphan.number]
    assert recover(study, tracker).requeued == []  # once only
    trials = study.get_trials(deepcopy=False)
    assert not awaiting_retry(trials[orphan.number], trials)
    retry = study.ask(PHI)
    assert retry.params == orphan.params and retry.user_attrs["retry_of"] == orphan.number
    study.tell(retry, 0.9)
    assert unresolved_failures(study) == []
