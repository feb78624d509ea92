"""Where a study stands: its trials counted by state, the best so far, the rungs reached, and a
finished trial in one line."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from nar_search.search.front import pareto
from nar_search.search.study import halving
from nar_search.search.study.record import SeedRecord, StudyRecord, TrialRecord, recorded
from nar_search.search.study.recovery import SETTLE_SECONDS, worker_alive, worker_gone
from nar_search.search.study.storage import GRACE_SECONDS

# What a study's number of trials counts: a pruned candidate is judged, as a completed one is.
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
STATUS_STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.PRUNED, TrialState.FAIL)


def infeasible_draw(trial: FrozenTrial) -> bool:
    """Parameters that give no network (γ < 1, an input below the minimum) or one over the
    GFLOPs budget: recorded for the sampler to learn from, nothing trained."""
    return not pareto.feasible(trial) and not TrialRecord.of(trial).trained


def counted(study: optuna.Study) -> int:
    """Candidates judged: an infeasible draw, which costs nothing, does not use up the study's trials."""
    return sum(not infeasible_draw(t) for t in study.get_trials(deepcopy=False, states=COUNTED_STATES))


def infeasible_draws(study: optuna.Study) -> int:
    return sum(infeasible_draw(t) for t in study.get_trials(deepcopy=False, states=COUNTED_STATES))


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
    infeasible: int  # completed or pruned draws that trained nothing and do not count
    best: FrozenTrial | None  # the trained trial of the best val AUC
    baseline: FrozenTrial | None
    rungs: dict[int, int]  # candidates that reached each rung, by its epochs
    confirmed: int  # points on the confirmed front, the baseline left out
    confirm_seeds: int | None  # the seeds they are confirmed over, once confirmation ran
    seeds_trained: int  # by confirmation
    running: list[str]  # a line per running trial: who runs it, and when it is retried should its worker be gone


def running_line(trial: FrozenTrial, heartbeat: bool) -> str:
    """Who runs `trial`, and what becomes of it should that worker be gone."""
    owner = TrialRecord.of(trial).worker
    if owner is None:
        return f"trial {trial.number}: asked for, not yet claimed by its worker"
    who = f"trial {trial.number} on {owner.get('host', '?')} (pid {owner.get('pid', '?')})"
    alive = worker_alive(owner)
    if alive is False:
        retried = f"a worker with nothing left to train retries it within {SETTLE_SECONDS:g} s, else the next one started"
        return f"{who}: its worker is gone; {retried}"
    if alive:
        return f"{who}: running"
    if heartbeat:
        return f"{who}: on another machine; retried {GRACE_SECONDS} s after its last heartbeat, should that worker go silent"
    return f"{who}: on another machine, whose worker this one cannot see"


def study_status(study: optuna.Study) -> StudyStatus:
    trials = study.trials
    lost = sum(t.state == TrialState.RUNNING and worker_gone(t) for t in trials)
    states = [t.state for t in trials]
    counts = {state.name.lower(): states.count(state) - (lost if state == TrialState.RUNNING else 0) for state in STATUS_STATES}
    trained = pareto.trained(study)
    best = max(trained, key=lambda t: recorded(TrialRecord.of(t).val_auc)) if trained else None
    epochs = recorded(StudyRecord.of(study).config)["training"]["epochs"]
    confirmed = sum(not TrialRecord.of(t).baseline for t in pareto.confirmed_front(study))
    seeds = sum(seed.done for seed in SeedRecord.all_of(study))
    heartbeat = is_heartbeat_enabled(study._storage)  # Optuna's own test, not public
    running = [running_line(t, heartbeat) for t in trials if t.state == TrialState.RUNNING]
    return StudyStatus(
        counts,
        lost,
        infeasible_draws(study),
        best,
        pareto.baseline(study),
        halving.reached(trials, epochs),
        confirmed,
        StudyRecord.of(study).confirm_seeds,
        seeds,
        running,
    )
