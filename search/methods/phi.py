"""What the methods walked by ϕ share (NAR and IR): ϕ's suggestion and grid, the ϕ = 0
baseline, and ϕ in names and trial attributes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nar_search.search.methods.base import Candidate, ReductionMethod

if TYPE_CHECKING:
    import optuna

    from nar_search.search.config import SearchSpace


class PhiMethod(ReductionMethod):
    """A method whose network follows from ϕ before training: sides × a coefficient^-ϕ."""

    def grid(self, space: SearchSpace) -> dict[str, list[Any]]:
        # ϕ = 0 is the enqueued baseline, which the GridSampler does not count as visited.
        return {"phi": [v for v in space.phi_values if v > 0] or [0.0]}

    def baseline_params(self, space: SearchSpace) -> dict[str, Any]:
        return {"phi": 0.0}

    def describe(self, candidate: Candidate) -> dict[str, float]:
        return {"phi": candidate.spec.reduction.phi}

    def label(self, candidate: Candidate) -> str:
        return f"{self.name} ϕ{candidate.spec.reduction.phi:.3g}"

    def slug(self, candidate: Candidate) -> str:
        return f"{self.name}-phi{candidate.spec.reduction.phi:g}"


def suggest_phi(trial: optuna.Trial, space: SearchSpace) -> float:
    if space.space == "bayes":
        return trial.suggest_float("phi", space.phi.low, space.phi.high, step=space.phi.step)
    return float(trial.suggest_categorical("phi", space.phi_values))
