"""Successive halving on the Pareto front: a candidate trains in rungs of growing budget and
goes on past a rung only while it is non-dominated, or among the best by non-domination rank
and crowding distance (NSGA-II's order), of the candidates that reached that rung.

Asynchronous, as ASHA: a candidate is judged when it reaches a rung, against whatever the
study's storage holds for that rung then, so no worker waits for a rung to fill. Each trial is
judged once per rung, by its own worker, so none is promoted twice; a promoted trial trains on
in the same fit and never restarts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial

from nar_search.search.study.record import TrialRecord, recorded

if TYPE_CHECKING:  # Lightning loads with the trainings, not with every reader of a study
    from nar_search.lightning_modules.rungs import Rungs

STOPPED_TAG = "nar.stopped_at_rung"


def rung_epochs(epochs: int, factor: int, rungs: int) -> list[int]:
    """Training budgets from `epochs` / factor^(rungs - 1) up to `epochs`, each at least one
    epoch, without repeats: 9 epochs, factor 3, 3 rungs → [1, 3, 9]."""
    return sorted({max(1, round(epochs / factor**k)) for k in range(rungs)})


@dataclass(frozen=True)
class RungResult:
    """A trial's val AUC (at a rung, or at its end) and GFLOPs: a point of the front's plane."""

    trial: int
    val_auc: float
    gflops: float

    def dominates(self, other: RungResult) -> bool:
        return (
            self.val_auc >= other.val_auc and self.gflops <= other.gflops and (self.val_auc > other.val_auc or self.gflops < other.gflops)
        )


def _fronts(results: list[RungResult]) -> list[list[RungResult]]:
    """Non-dominated sorting: the front, then the front of what remains, and so on."""
    fronts, remaining = [], list(results)
    while remaining:
        front = [r for r in remaining if not any(o.dominates(r) for o in remaining)]
        fronts.append(front)
        remaining = [r for r in remaining if r not in front]
    return fronts


def _crowding(front: list[RungResult]) -> dict[int, float]:
    """NSGA-II's crowding distance: how far a point's neighbours on its front lie, summed over
    both objectives (each scaled by its range); the ends are infinitely far."""
    distance = {r.trial: 0.0 for r in front}
    for key in ("val_auc", "gflops"):
        ordered = sorted(front, key=lambda r: getattr(r, key))
        span = getattr(ordered[-1], key) - getattr(ordered[0], key)
        distance[ordered[0].trial] = distance[ordered[-1].trial] = math.inf
        for before, point, after in zip(ordered, ordered[1:], ordered[2:]):
            if span > 0:
                distance[point.trial] += (getattr(after, key) - getattr(before, key)) / span
    return distance


def ranked(results: list[RungResult]) -> list[RungResult]:
    """NSGA-II's order: by front, and within a front the more isolated first."""
    order = []
    for front in _fronts(results):
        crowding = _crowding(front)
        order += sorted(front, key=lambda r: (-crowding[r.trial], r.trial))
    return order


def promoted(candidate: RungResult, results: list[RungResult], factor: int) -> bool:
    """Whether `candidate` goes on: non-dominated among `results` (the rung's, itself included),
    or within the best 1/`factor` of them by NSGA-II's order."""
    if not any(other.dominates(candidate) for other in results):
        return True
    return ranked(results).index(candidate) < len(results) // factor


def rung_results(trials: list[FrozenTrial], epochs: int) -> list[RungResult]:
    """What the study's trials recorded at the rung of `epochs` epochs; baselines and reused
    results are no candidates of their own."""
    results = []
    for trial in trials:
        record = TrialRecord.of(trial)
        if record.baseline or record.reused_from is not None:
            continue
        for rung in record.rungs or []:
            if rung["epochs"] == epochs:
                results.append(RungResult(trial.number, rung["val_auc"], recorded(record.expected_gflops)))
    return results


@dataclass
class RungJudge:
    """Judges one trial at its rungs: records the rung's val AUC in the trial's record before
    reading the others', so that two workers at one rung see each other."""

    study: optuna.Study
    trial: optuna.trial.BaseTrial
    factor: int

    def __call__(self, epochs: int, val_auc: float) -> bool:
        record = TrialRecord.of(self.trial)
        reached = [*(record.rungs or []), {"epochs": epochs, "val_auc": val_auc}]
        TrialRecord(rungs=reached).write(self.trial)
        results = rung_results(self.study.get_trials(deepcopy=False), epochs)
        mine = next(r for r in results if r.trial == self.trial.number)
        goes_on = promoted(mine, results, self.factor)
        reached[-1]["promoted"] = goes_on
        TrialRecord(rungs=reached).write(self.trial)
        return goes_on


def rungs_callback(study: optuna.Study, trial: optuna.trial.BaseTrial, epochs: int, factor: int, rungs: int) -> Rungs:
    from nar_search.lightning_modules.rungs import Rungs

    return Rungs(rung_epochs(epochs, factor, rungs), RungJudge(study, trial, factor))


def reached(trials: list[FrozenTrial], full_epochs: int) -> dict[int, int]:
    """How many candidates reached each rung (by its epochs), the full budget included."""
    counts: dict[int, int] = {}
    for trial in trials:
        record = TrialRecord.of(trial)
        if record.rungs is None or record.reused_from is not None:
            continue
        epochs = [rung["epochs"] for rung in record.rungs]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            epochs.append(full_epochs)
        for value in epochs:
            counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))
