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


def test_a_killed_worker_that_its_parent_has_not_reaped_yet_is_gone():
    import signal
    import subprocess
    import time

    from nar_search.search.study.recovery import _process_start, worker_alive

    child = subprocess.Popen(["sleep", "60"])
    owner = {"host": socket.gethostname(), "pid": child.pid, "started": _process_start(child.pid)}
    assert worker_alive(owner) is True
    child.send_signal(signal.SIGKILL)
    time.sleep(0.3)  # dead, not yet waited for: a zombie
    assert worker_alive(owner) is False
    child.wait()


def test_status_says_who_runs_each_trial_and_when_a_dead_workers_is_retried():
    from nar_search.search.study.recovery import this_worker
    from nar_search.search.study.status import running_line

    study = optuna.create_study()
    owners = [this_worker(), {"host": socket.gethostname(), "pid": 2**22 + 7, "started": "1"}, {"host": "node-7", "pid": 12}, None]
    for owner in owners:
        trial = study.ask()
        if owner is not None:
            trial.set_user_attr("worker", owner)
    lines = [running_line(t, heartbeat=False) for t in study.trials]
    assert lines[0].endswith(": running")
    assert "its worker is gone; a worker with nothing left to train retries it within 5 s" in lines[1]
    assert lines[2] == "trial 2 on node-7 (pid 12): on another machine, whose worker this one cannot see"
    assert "retried 90 s after its last heartbeat" in running_line(study.trials[2], heartbeat=True)
    assert lines[3] == "trial 3: asked for, not yet claimed by its worker"


def test_an_error_the_storage_going_away_caused_is_told_apart_from_the_others():
    from sqlalchemy.exc import OperationalError

    from nar_search.search.study.runner import _storage_unreachable

    try:
        try:
            raise optuna.exceptions.StorageInternalError("commit failed")
        except optuna.exceptions.StorageInternalError:
            raise UnboundLocalError("updated_state")  # noqa: B904  # as Optuna 5 raises it: the first error as context only
    except UnboundLocalError as error:
        assert _storage_unreachable(error)
    assert _storage_unreachable(OperationalError("SELECT 1", {}, Exception("the database system is starting up")))
    assert not _storage_unreachable(ValueError("a bug of ours"))
