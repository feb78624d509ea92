"""A point's figures over every seed it was trained with: the trial's own and those that
confirmation added, as mean ± standard deviation (population, as training reports them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial

from nar_search.search.study.record import SeedRecord, StudyRecord, TrialRecord, recorded


@dataclass(frozen=True)
class SeedFigures:
    seeds: int
    val_auc: float
    val_auc_std: float
    test_auc: float
    test_auc_std: float


def pooled(groups: list[tuple[int, float, float]]) -> tuple[float, float]:
    """The mean and standard deviation of the values of several groups, each given as (count,
    mean, standard deviation): exact, so a trial's own seeds need not be stored one by one."""
    count = sum(n for n, _, _ in groups)
    mean = sum(n * m for n, m, _ in groups) / count
    square = sum(n * (s * s + m * m) for n, m, s in groups) / count
    return mean, math.sqrt(max(square - mean * mean, 0.0))


def own_seeds(study: optuna.Study) -> int:
    """How many seeds each trial trains (the study's training.seeds)."""
    return int((StudyRecord.of(study).config or {}).get("training", {}).get("seeds", 1))


def source(trial: FrozenTrial) -> int:
    """The trial that trained this trial's network: a reused result is confirmed once, for both."""
    reused_from = TrialRecord.of(trial).reused_from
    return trial.number if reused_from is None else reused_from


def seed_figures(study: optuna.Study, trials: list[FrozenTrial]) -> dict[int, SeedFigures]:
    """The figures of each of `trials` (trained ones) over its seeds so far, by trial number."""
    extra: dict[int, list[SeedRecord]] = {}
    for seed in SeedRecord.all_of(study):
        if seed.done:
            extra.setdefault(seed.trial, []).append(seed)
    seeds = own_seeds(study)
    figures = {}
    for trial in trials:
        record = TrialRecord.of(trial)
        added = [] if record.baseline else extra.get(source(trial), [])
        val = pooled([(seeds, recorded(record.val_auc), record.val_auc_std or 0.0)] + [(1, recorded(s.val_auc), 0.0) for s in added])
        test = pooled([(seeds, recorded(record.test_auc), record.test_auc_std or 0.0)] + [(1, recorded(s.test_auc), 0.0) for s in added])
        figures[trial.number] = SeedFigures(seeds + len(added), *val, *test)
    return figures


def confirm_seeds(study: optuna.Study) -> int | None:
    """The seeds over which a point counts as confirmed, once the study's confirmation ran."""
    return StudyRecord.of(study).confirm_seeds
