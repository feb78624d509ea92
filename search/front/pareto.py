"""The Pareto front of val AUC against GFLOPs, its table, and choosing a model from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nar_search.search.front.seeds import SeedFigures, confirm_seeds, seed_figures
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
    # Over every seed it was trained with, its trial's own and those confirmation added:
    seeds: int = 1
    mean_val_auc: float | None = None
    val_auc_sd: float | None = None
    mean_test_auc: float | None = None
    test_auc_sd: float | None = None
    confirmed: bool = False  # trained over the seeds the study confirms its front with
    confirmed_front: bool = False  # on the front of the confirmed points and the baseline, by mean val AUC

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
    return nondominated(candidates, {t.number: _point(t) for t in candidates})


def nondominated(trials: list[FrozenTrial], points: dict[int, RungResult]) -> list[FrozenTrial]:
    """The trials whose points no other's dominates, by GFLOPs."""
    front = [t for t in trials if not any(other.dominates(points[t.number]) for other in points.values())]
    return sorted(front, key=_gflops)


def seed_points(trials: list[FrozenTrial], figures: dict[int, SeedFigures]) -> dict[int, RungResult]:
    """Each trial's point by its val AUC over its seeds."""
    return {t.number: RungResult(t.number, figures[t.number].val_auc, _gflops(t)) for t in trials}


def confirmed(study: optuna.Study) -> list[FrozenTrial]:
    """The points trained over the seeds the study is confirmed with, and the baseline; none
    before the study's confirmation ran."""
    target = confirm_seeds(study)
    if target is None:
        return []
    candidates = [t for t in trained(study) if feasible(t)]
    figures = seed_figures(study, candidates)
    return [t for t in candidates if TrialRecord.of(t).baseline or figures[t.number].seeds >= target]


def confirmed_front(study: optuna.Study, points: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """The front of the confirmed points and the baseline (`confirmed(study)`, unless given), by
    mean val AUC over their seeds."""
    points = confirmed(study) if points is None else points
    return nondominated(points, seed_points(points, seed_figures(study, points)))


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


def row(
    trial: FrozenTrial,
    baseline_gflops: float | None,
    on_front: bool = True,
    seeds: SeedFigures | None = None,
    confirmed: bool = False,
    on_confirmed_front: bool = False,
) -> TrialRow:
    record = TrialRecord.of(trial)
    settings, gflops = record.settings, recorded(record.gflops)
    spread = seeds if seeds is not None and seeds.seeds > 1 else None
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
        seeds=spread.seeds if spread else 1,
        mean_val_auc=spread.val_auc if spread else None,
        val_auc_sd=spread.val_auc_std if spread else None,
        mean_test_auc=spread.test_auc if spread else None,
        test_auc_sd=spread.test_auc_std if spread else None,
        confirmed=confirmed,
        confirmed_front=on_confirmed_front,
    )


def pareto_rows(study: optuna.Study, every_trial: bool = False) -> list[TrialRow]:
    """The front's rows by GFLOPs, the confirmed front's among them; with `every_trial`, all
    trained trials, fronts marked, and the candidates stopped at a rung (at their rung's val AUC)."""
    reference = baseline(study)
    gflops = TrialRecord.of(reference).gflops if reference else None
    on_front = {t.number for t in front(study)}
    confirmed_trials = confirmed(study)
    confirmed_points = {t.number for t in confirmed_trials}
    on_confirmed_front = {t.number for t in confirmed_front(study, confirmed_trials)}
    shown = on_front | on_confirmed_front
    trials = trained(study) + stopped(study) if every_trial else [t for t in trained(study) if t.number in shown]
    figures = seed_figures(study, [t for t in trials if TrialRecord.of(t).trained])
    rows = [
        row(t, gflops, t.number in on_front, figures.get(t.number), t.number in confirmed_points, t.number in on_confirmed_front)
        for t in trials
    ]
    return sorted(rows, key=lambda r: (r.gflops, r.trial))


def select(study: optuna.Study, max_auc_drop: float) -> TrialRow | None:
    """The cheapest trial whose val AUC is within `max_auc_drop` of the baseline's: of the
    confirmed points by their mean over seeds, once the study is confirmed; of every trained
    trial by its own val AUC before."""
    reference = baseline(study)
    if reference is None:
        return None
    base = TrialRecord.of(reference)
    floor = recorded(base.val_auc) - max_auc_drop
    confirmed_points = confirmed(study)
    pool = [t for t in confirmed_points if t.number != reference.number] + [reference] if confirmed_points else trained(study)
    points = seed_points(pool, seed_figures(study, pool)) if confirmed_points else {t.number: _point(t) for t in pool}
    # The baseline always qualifies (it is the floor's reference), so there is always a choice.
    cheapest = min((p for p in points.values() if p.val_auc >= floor), key=lambda point: (point.gflops, -point.val_auc))
    return next(r for r in pareto_rows(study, every_trial=True) if r.trial == cheapest.trial)
