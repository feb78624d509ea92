"""NAR: compound scaling down of depth, width and input side by α^-ϕ, β^-ϕ, γ^-ϕ.

The study's space decides the coefficients: `paper` fixes α, β, γ at 1.2, 1.1, 1.15; `grid`
crosses every admissible (α, β, γ); `bayes` samples α and β and derives γ so that
α·β²·γ² = 2 exactly (a derived γ < 1 is infeasible, recorded as an Optuna constraint, never
clipped).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from nar_search.models.reduce import PAPER_COEFFICIENTS, NARCoefficients, nar_reduce
from nar_search.models.rounding import scale_side
from nar_search.models.spec import ArchSpec
from nar_search.search.methods.base import Candidate, ReductionOptions, register
from nar_search.search.methods.phi import PhiMethod, suggest_phi
from nar_search.search.study.record import TrialRecord

if TYPE_CHECKING:
    import optuna

    from nar_search.search.config import SearchSpace

GAMMA_CONSTRAINT = "gamma_below_one"
INPUT_CONSTRAINT = "input_below_minimum"  # px short of the family's minimum input side


@register
class NAR(PhiMethod):
    name = "nar"
    summary = "compound scaling"
    constraints = (GAMMA_CONSTRAINT, INPUT_CONSTRAINT)

    def suggest(self, trial: optuna.Trial, space: SearchSpace, original: ArchSpec) -> Candidate | None:
        phi = suggest_phi(trial, space)
        alpha, beta, gamma = _suggest_coefficients(trial, space)
        # A bayes point whose γ^-ϕ takes the input below the family's minimum is as infeasible
        # as γ < 1: the sampler learns the region to avoid, rather than the trial failing. Both
        # are measured for every draw (a γ < 1 side is merely larger).
        side = scale_side(original.input_size, gamma**-phi)
        trial.set_constraint(GAMMA_CONSTRAINT, 1 - gamma)
        trial.set_constraint(INPUT_CONSTRAINT, original.min_input_size - side)
        if gamma < 1 or side < original.min_input_size:
            return None
        coefficients = NARCoefficients(alpha, beta, gamma, tolerance=space.tolerance)
        return Candidate(nar_reduce(original, phi, coefficients, space.rounding))

    def grid(self, space: SearchSpace) -> dict[str, list[Any]]:
        grid = super().grid(space)
        if space.space == "grid":
            grid["coefficients"] = [_key(c) for c in space.admissible_coefficients()]
        return grid

    def baseline_params(self, space: SearchSpace) -> dict[str, Any]:
        params = super().baseline_params(space)
        if space.space == "grid":
            params["coefficients"] = _key(space.admissible_coefficients()[0])
        if space.space == "bayes":
            params.update(alpha=PAPER_COEFFICIENTS[0], beta=PAPER_COEFFICIENTS[1])
        return params

    def from_options(self, original: ArchSpec, options: ReductionOptions) -> Candidate:
        coefficients = NARCoefficients(options.alpha, options.beta, options.gamma, options.tolerance)
        return Candidate(nar_reduce(original, options.phi, coefficients, options.rounding))

    def describe(self, candidate: Candidate) -> dict[str, float]:
        r = candidate.spec.reduction
        return {"alpha": r.alpha, "beta": r.beta, "gamma": r.gamma, **super().describe(candidate)}

    def label(self, candidate: Candidate) -> str:
        r = candidate.spec.reduction
        return f"{super().label(candidate)} α{r.alpha:.3g} β{r.beta:.3g} γ{r.gamma:.3g}"

    def heading(self, candidate: Candidate) -> str:
        r = candidate.spec.reduction
        return f"NAR α={r.alpha} β={r.beta} γ={r.gamma} ({r.rounding} rounding)"


def _suggest_coefficients(trial: optuna.Trial, space: SearchSpace) -> tuple[float, float, float]:
    if space.space == "paper":
        return PAPER_COEFFICIENTS
    if space.space == "grid":
        key = trial.suggest_categorical("coefficients", [_key(c) for c in space.admissible_coefficients()])
        return tuple(float(v) for v in key.split(","))  # type: ignore[return-value]
    alpha = trial.suggest_float("alpha", space.alpha.low, space.alpha.high)
    beta = trial.suggest_float("beta", space.beta.low, space.beta.high)
    gamma = math.sqrt(2 / (alpha * beta**2))
    TrialRecord(settings={"gamma": gamma}).write(trial)
    return alpha, beta, gamma


def _key(coefficients: tuple[float, float, float]) -> str:
    return ",".join(f"{v:g}" for v in coefficients)
