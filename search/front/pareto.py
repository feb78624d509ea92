"""The Pareto front of val AUC against GFLOPs, its table, and choosing a model from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nar_search.search.study.halving import RungResult
from nar_search.search.study.record import TrialRecord, recorded


@dataclass(frozen=True)
class TrialRow:
    trial: int
    method: str
    alpha: float | None
    beta: float | None
    gamma: float | None
    phi: float | None
    flops_target: float | None
    input_size: int | None  # None where a record was written without its request (by hand, in a test)
    gflops: float
    reduction: float
    val_auc: float
    test_auc: float
    mlflow_run_id: str
    baseline: bool
    pareto: bool
    stopped_at_rung: int | None = None  # epochs, for a candidate that successive halving stopped

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def trained(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that hold a trained (or reused) network: full-budget results only."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if TrialRecord.of(t).trained]


def stopped(study: optuna.Study) -> list[FrozenTrial]:
    """Candidates that successive halving stopped at a rung: never on the front, never chosen."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if TrialRecord.of(t).stopped_at_rung is not None]


def feasible(trial: FrozenTrial) -> bool:
    return all(value <= 0 for value in (trial.constraints or {}).values())


def front(study: optuna.Study) -> list[FrozenTrial]:
    """Optuna's own front for a two-objective study; the non-dominated trials otherwise."""
    if len(study.directions) == 2:
        return sorted(study.best_trials, key=_gflops)
    candidates = [t for t in trained(study) if feasible(t)]
    points = {t.number: _point(t) for t in candidates}
    front = [t for t in candidates if not any(other.dominates(points[t.number]) for other in points.values())]
    return sorted(front, key=_gflops)


def _gflops(trial: FrozenTrial) -> float:
    return recorded(TrialRecord.of(trial).gflops)


def _point(trial: FrozenTrial) -> RungResult:
    record = TrialRecord.of(trial)
    return RungResult(trial.number, recorded(record.val_auc), recorded(record.gflops))


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area of (GFLOPs, AUC) that `points` dominate up to `reference` (the most GFLOPs, the
    least AUC counted): one number for a whole front, larger is better."""
    most_gflops, least_auc = reference
    area, best_auc = 0.0, least_auc
    inside = sorted((g, a) for g, a in points if g < most_gflops and a > least_auc)
    for (gflops, auc), (next_gflops, _) in zip(inside, [*inside[1:], (most_gflops, None)]):
        best_auc = max(best_auc, auc)
        area += (next_gflops - gflops) * (best_auc - least_auc)
    return area


def baseline(study: optuna.Study) -> FrozenTrial | None:
    return next((t for t in trained(study) if TrialRecord.of(t).baseline), None)


def row(trial: FrozenTrial, baseline_gflops: float | None, on_front: bool = True) -> TrialRow:
    record = TrialRecord.of(trial)
    settings, gflops = record.settings, recorded(record.gflops)
    return TrialRow(
        trial=trial.number,
        method=recorded(record.method),
        alpha=settings.get("alpha"),
        beta=settings.get("beta"),
        gamma=settings.get("gamma"),
        phi=settings.get("phi"),
        flops_target=settings.get("flops_target"),
        input_size=record.input_size,
        gflops=gflops,
        reduction=(baseline_gflops / gflops) if baseline_gflops else float("nan"),
        val_auc=recorded(record.val_auc),
        test_auc=recorded(record.test_auc),
        mlflow_run_id=record.mlflow_run_id or "",
        baseline=bool(record.baseline),
        pareto=on_front,
        stopped_at_rung=record.stopped_at_rung,
    )


def pareto_rows(study: optuna.Study, every_trial: bool = False) -> list[TrialRow]:
    """The front's rows by GFLOPs; with `every_trial`, all trained trials, front marked, and the
    candidates stopped at a rung (at their rung's val AUC)."""
    reference = baseline(study)
    gflops = TrialRecord.of(reference).gflops if reference else None
    on_front = {t.number for t in front(study)}
    trials = trained(study) + stopped(study) if every_trial else front(study)
    rows = [row(t, gflops, t.number in on_front) for t in trials]
    return sorted(rows, key=lambda r: (r.gflops, r.trial))


def select(study: optuna.Study, max_auc_drop: float) -> TrialRow | None:
    """The cheapest trained trial whose val AUC is within `max_auc_drop` of the baseline's."""
    reference = baseline(study)
    if reference is None:
        return None
    base = TrialRecord.of(reference)
    floor = recorded(base.val_auc) - max_auc_drop
    trials = {t.number: t for t in trained(study)}
    eligible = [point for point in map(_point, trials.values()) if point.val_auc >= floor]
    cheapest = min(eligible, key=lambda point: (point.gflops, -point.val_auc))
    return row(trials[cheapest.trial], base.gflops, cheapest.trial in {t.number for t in front(study)})
