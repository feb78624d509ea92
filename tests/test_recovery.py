"""Recovery on its own: a trial whose worker is gone is failed and queued again exactly once,
and until then the trials that wait on it can tell it will be retried."""

import socket
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

from nar_search.search.study.record import StudyRecord, TrialRecord
from nar_search.search.study.recovery import awaiting_retry, end_orphaned_parent, recover, this_worker, unresolved_failures
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


def test_a_parent_run_whose_study_process_was_killed_is_ended_by_a_finishing_worker(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    study = optuna.create_study()
    parent = tracker.client.create_run(tracker.experiment_id("s")).info.run_id
    StudyRecord(mlflow_parent_run_id=parent, runner=this_worker()).write(study)
    assert not end_orphaned_parent(study, tracker)  # its process runs: left to it
    StudyRecord(runner={"host": socket.gethostname(), "pid": 2**22 + 1, "started": "1"}).write(study)  # killed with -9
    assert end_orphaned_parent(study, tracker)
    run = tracker.client.get_run(parent)
    assert run.info.status == "KILLED" and "stopped without ending it" in run.data.tags["failure_reason"]
    assert not end_orphaned_parent(study, tracker)  # once
