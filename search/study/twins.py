"""Architecture twins: trials whose candidates round to the same network train it once; the
later ones reuse the result, waiting while a living worker still trains it."""

from __future__ import annotations

import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from nar_search.search.study.bases import POLL_SECONDS
from nar_search.search.study.record import TrialRecord
from nar_search.search.study.recovery import worker_gone
from nar_search.search.study.status import COUNTED_STATES
from nar_search.search.study.trial import TrialRequest, TrialResult
from nar_search.search.tracking import Tracker


def trained_twin(study: optuna.Study, architecture: str, number: int) -> FrozenTrial | None:
    """An earlier trial of the same network: its result, once it has one. While another
    (living) worker still trains it, trial `number` waits rather than train the same network twice."""
    while True:
        twins = [
            other
            for other in study.get_trials(deepcopy=False, states=(*COUNTED_STATES, TrialState.RUNNING))
            if other.number != number and TrialRecord.of(other).architecture == architecture
        ]
        trained = [t for t in twins if _trained_or_stopped(t)]
        if trained:
            return trained[0]
        if not any(t.state == TrialState.RUNNING and t.number < number and not worker_gone(t) for t in twins):
            return None
        time.sleep(POLL_SECONDS)


def reuse(tracker: Tracker, run_id: str, twin: FrozenTrial, request: TrialRequest) -> TrialResult:
    """The twin's result (or its stop at a rung), recorded in this trial's run as reused."""
    result = TrialResult.reused(twin)
    twin_run = TrialRecord.of(twin).mlflow_run_id
    tracker.set_tags(run_id, {"reused_from_trial": str(twin.number), "reused_run_id": str(twin_run)})
    tracker.log_params(run_id, {"method": request.method.name, "spec": request.candidate.spec.to_dict(), **request.params})
    tracker.log_metrics(run_id, {"gflops": result.gflops, "params": result.params, "val_auc": result.val_auc, "test_auc": result.test_auc})
    return result


def _trained_or_stopped(trial: FrozenTrial) -> bool:
    record = TrialRecord.of(trial)
    return (trial.state == TrialState.COMPLETE and record.trained) or record.stopped_at_rung is not None
