"""What a study has spent on training: every training its trials and its confirmation ran (the
base's when the study trained it, every rung, every seed), in epochs, in GFLOPs-weighted
epochs, and in seconds. A reused result costs nothing; a training that a stop cut short
recorded nothing and is not counted."""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from nar_search.search.study.record import SeedRecord, TrialRecord


@dataclass(frozen=True)
class Compute:
    trainings: int
    epochs: int
    gflop_epochs: float  # Σ epochs × GFLOPs per patch of the network trained: × training patches, the forward passes' GFLOPs
    seconds: float

    def as_metrics(self) -> dict[str, float]:
        return {f"compute_{name}": float(value) for name, value in vars(self).items()}


def study_compute(study: optuna.Study) -> Compute:
    trainings: list[tuple[int, float, float]] = []
    cost: dict[int, float] = {}
    for trial in study.get_trials(deepcopy=False):
        record = TrialRecord.of(trial)
        cost[trial.number] = record.training_gflops or record.gflops or 0.0
        if record.reused_from is None and record.epochs:
            trainings.append((record.epochs, cost[trial.number], record.seconds or 0.0))
    for seed in SeedRecord.all_of(study):
        if seed.done:
            trainings.append((seed.epochs or 0, cost.get(seed.trial) or seed.gflops or 0.0, seed.seconds or 0.0))
    return Compute(
        trainings=len(trainings),
        epochs=sum(epochs for epochs, _, _ in trainings),
        gflop_epochs=sum(epochs * gflops for epochs, gflops, _ in trainings),
        seconds=sum(seconds for _, _, seconds in trainings),
    )
