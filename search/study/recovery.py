"""Trials whose worker is gone: found, failed, and queued again exactly once.

Every trial records who runs it (host, pid and the process's start time, so a reused pid is
not mistaken for the worker). On PostgreSQL, Optuna's heartbeat also fails a silent worker's
trial (on another machine too) and queues it again through `requeue`; on SQLite and journal
files, which have no heartbeat, the owner record is what tells an orphan from a trial still
running. Either way a failed trial is retried once: it counts as retried when a later trial
names it in `retry_of`."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import optuna
from mlflow.entities import RunStatus
from optuna.trial import FrozenTrial, TrialState

from nar_search.search.study.record import StudyRecord, TrialRecord
from nar_search.search.tracking import Tracker

# A trial is asked for before it can record its owner: one with no owner after this long is orphaned.
UNCLAIMED_SECONDS = 120
# How often a study's parent process looks for trials that Optuna's heartbeat failed elsewhere.
RECOVERY_SECONDS = 30.0
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
SETTLE_SECONDS = 5.0  # how often a worker with nothing left to train looks for the trials of dead workers


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), or None if there is no such process
    or it is a zombie (dead, its parent yet to read its exit status)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state, *fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if state == "Z" or len(fields) < 19 else fields[18]


def this_worker() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_start(os.getpid())}


def worker_alive(owner: dict[str, Any]) -> bool | None:
    """Whether the worker that claimed a trial still runs; None for a worker on another host,
    which only a heartbeat can tell about."""
    if owner.get("host") != socket.gethostname():
        return None
    started = _process_start(int(owner["pid"]))
    return started is not None and started == owner.get("started")


def worker_gone(trial: FrozenTrial) -> bool:
    """A running trial whose worker is known to have died (until recovery marks it failed)."""
    owner = TrialRecord.of(trial).worker
    return owner is not None and worker_alive(owner) is False


def awaiting_retry(trial: FrozenTrial, trials: list[FrozenTrial]) -> bool:
    """A trial whose worker is gone and that recovery has not yet queued again: still running
    on the record, or failed by recovery with no retry naming it."""
    if trial.state == TrialState.RUNNING:
        return worker_gone(trial)
    return (
        trial.state == TrialState.FAIL
        and TrialRecord.of(trial).failure is not None
        and not any(TrialRecord.of(t).retry_of == trial.number for t in trials)
    )


def _orphaned(trial: FrozenTrial, now: datetime, stopping: bool) -> bool:
    owner = TrialRecord.of(trial).worker
    if stopping and owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        return True
    if owner is None:
        return trial.datetime_start is not None and now - trial.datetime_start > timedelta(seconds=UNCLAIMED_SECONDS)
    return worker_gone(trial)


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queues a failed trial again: its parameters and baseline mark, and which trial it retries.
    Also Optuna's heartbeat callback, so a retry never carries a dead worker's claim or run."""
    retry = TrialRecord(baseline=TrialRecord.of(trial).baseline, retry_of=trial.number)
    study.enqueue_trial(trial.params, user_attrs=retry.attrs(), skip_if_exists=False)


def unresolved_failures(study: optuna.Study) -> list[int]:
    """Failed trials with no finished retry, following retries of retries."""
    trials = study.get_trials(deepcopy=False)
    retries: dict[int, list[FrozenTrial]] = {}
    for trial in trials:
        if (retried := TrialRecord.of(trial).retry_of) is not None:
            retries.setdefault(retried, []).append(trial)

    def resolved(trial: FrozenTrial) -> bool:
        return trial.state in FINISHED_STATES or any(resolved(retry) for retry in retries.get(trial.number, []))

    return [t.number for t in trials if t.state == TrialState.FAIL and not resolved(t)]


@dataclass
class Recovery:
    orphans: list[int] = field(default_factory=list)  # running trials whose worker was gone, now failed
    requeued: list[int] = field(default_factory=list)  # failed trials queued again

    def __str__(self) -> str:
        parts = []
        if self.orphans:
            parts.append(f"trial(s) {', '.join(map(str, self.orphans))} had lost their worker and are marked failed")
        if self.requeued:
            parts.append(f"{len(self.requeued)} failed trial(s) queued again ({', '.join(map(str, self.requeued))})")
        return "; ".join(parts)


def recover(study: optuna.Study, tracker: Tracker, requeue_failed: bool = True, stopping: bool = False) -> Recovery:
    """Fails the trials of workers that are gone (and, when `stopping`, this process's own),
    ends their MLflow runs as KILLED, and (with `requeue_failed`) queues every failed trial
    that no trial retries yet, once."""
    recovery = Recovery()
    now = datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _orphaned(trial, now, stopping):
            owner = TrialRecord.of(trial).worker or {}
            gone = "stopped" if stopping and owner.get("pid") == os.getpid() else "gone"
            reason = f"worker {gone} (pid {owner.get('pid', '?')} on {owner.get('host', '?')})"
            # Optuna has no public call that fails another process's trial and notes why on it:
            # study.tell() runs the sampler's after_trial (the grid sampler's stops the study,
            # which only an optimize loop may), and user attributes are set through a live
            # Trial only. So the storage's own calls (tests/test_recovery.py pins them).
            try:
                for key, value in TrialRecord(failure=reason).attrs().items():
                    study._storage.set_trial_user_attr(trial._trial_id, key, value)
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker recovered it first: its retry is that worker's to queue
            recovery.orphans.append(trial.number)
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.state == TrialState.FAIL:
            _end_run(tracker, trial)
    if requeue_failed:
        retried = {TrialRecord.of(t).retry_of for t in trials} - {None}
        for trial in trials:
            if trial.state == TrialState.FAIL and trial.number not in retried and trial.params:
                requeue(study, trial)
                recovery.requeued.append(trial.number)
    return recovery


def end_orphaned_parent(study: optuna.Study, tracker: Tracker) -> bool:
    """The study's parent run, left RUNNING by a `nar study run` that was killed outright while
    its workers went on: ended KILLED by the worker that finishes, not left until the next run."""
    record = StudyRecord.of(study)
    if record.runner is None or record.mlflow_parent_run_id is None or worker_alive(record.runner) is not False:
        return False
    run_id = record.mlflow_parent_run_id
    if tracker.client.get_run(run_id).info.status != RunStatus.to_string(RunStatus.RUNNING):
        return False
    reason = f"its nar study process (pid {record.runner.get('pid', '?')}) stopped without ending it"
    tracker.client.set_tag(run_id, "failure_reason", reason)
    tracker.client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
    return True


def _end_run(tracker: Tracker, trial: FrozenTrial) -> None:
    """A failed trial's MLflow run that its gone worker left RUNNING ends KILLED, with the reason."""
    record = TrialRecord.of(trial)
    run_id = record.mlflow_run_id
    if run_id is None:
        return
    run = tracker.client.get_run(run_id)
    if run.info.status == RunStatus.to_string(RunStatus.RUNNING) and run.data.tags.get("optuna.trial_number") == str(trial.number):
        reason = record.failure or "its worker stopped without ending it"
        tracker.client.set_tag(run_id, "failure_reason", reason)
        tracker.client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
