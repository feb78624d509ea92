"""Where a study stands: its trials counted by state, the best so far, the rungs reached, and a
finished trial in one line."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from nar_search.search import halving, pareto
from nar_search.search.record import StudyRecord, TrialRecord
from nar_search.search.recovery import worker_gone

# What a study's number of trials counts: a pruned candidate is judged, as a completed one is.
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
STATUS_STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.PRUNED, TrialState.FAIL)


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED_STATES))


def trial_line(trial: FrozenTrial) -> str:
    """A finished trial as progress shows it, e.g. `trial 3 nar: AUC 0.912 at 1.234 GFLOPs`."""
    record = TrialRecord.of(trial)
    if trial.state != TrialState.COMPLETE:
        return f"trial {trial.number}: {trial.state.name.lower()}"
    if record.val_auc is None:
        return f"trial {trial.number}: infeasible"
    return f"trial {trial.number} {record.method}: AUC {record.val_auc:.3f} at {record.gflops:.3f} GFLOPs"


@dataclass(frozen=True)
class StudyStatus:
    states: dict[str, int]  # trials per state; a running trial whose worker is gone counts as lost instead
    lost: int
    best: FrozenTrial | None  # the trained trial of the best val AUC
    baseline: FrozenTrial | None
    rungs: dict[int, int]  # candidates that reached each rung, by its epochs


def study_status(study: optuna.Study) -> StudyStatus:
    trials = study.trials
    lost = sum(t.state == TrialState.RUNNING and worker_gone(t) for t in trials)
    states = [t.state for t in trials]
    counts = {state.name.lower(): states.count(state) - (lost if state == TrialState.RUNNING else 0) for state in STATUS_STATES}
    trained = pareto.trained(study)
    best = max(trained, key=lambda t: TrialRecord.of(t).val_auc) if trained else None
    epochs = StudyRecord.of(study).config["training"]["epochs"]
    return StudyStatus(counts, lost, best, pareto.baseline(study), halving.reached(trials, epochs))
