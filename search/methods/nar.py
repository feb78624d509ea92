"""NAR: compound scaling down of depth, width and input side by α^-ϕ, β^-ϕ, γ^-ϕ.

The shape of α, β, γ in the settings decides how a study draws them: one value each fixes
them (the paper's 1.2, 1.1, 1.15 by default); lists cross every admissible (α, β, γ) as one
categorical `coefficients`; a range for α or β samples them and derives γ so that
α·β²·γ² = 2 exactly. Ranges for both are drawn within what ϕ leaves feasible (feasible.py);
with a list for one, a draw whose γ < 1 or whose input falls below the minimum is
infeasible, recorded as an Optuna constraint, never clipped.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from nar_search.models.reduce import DEFAULT_TOLERANCE, PAPER_COEFFICIENTS, NARCoefficients, nar_reduce
from nar_search.models.rounding import DEFAULT_ROUNDING, Rounding, scale_side
from nar_search.models.spec import ArchSpec
from nar_search.search.methods.base import Candidate, register
from nar_search.search.methods.feasible import FeasibleCoefficients
from nar_search.search.methods.phi import PhiMethod, suggest_phi
from nar_search.search.methods.settings import Dimension, MethodSettings, Range, choices, lower_bound, point, suggest_value, values
from nar_search.search.study.record import TrialRecord

if TYPE_CHECKING:
    import optuna

GAMMA_CONSTRAINT = "gamma_below_one"
INPUT_CONSTRAINT = "input_below_minimum"  # px short of the family's minimum input side
FRACTIONS = ("alpha_fraction", "beta_fraction")  # where α and β lie in what ϕ leaves feasible


class NARSettings(MethodSettings):
    alpha: Dimension = Field(default=PAPER_COEFFICIENTS[0], description="depth coefficient α")
    beta: Dimension = Field(default=PAPER_COEFFICIENTS[1], description="width coefficient β")
    gamma: Dimension = Field(default=PAPER_COEFFICIENTS[2], description="resolution coefficient γ (derived when α or β is a range)")
    tolerance: float = Field(default=DEFAULT_TOLERANCE, gt=0, lt=1, description="allowed relative distance of α·β²·γ² from 2")
    rounding: Rounding = Field(default=DEFAULT_ROUNDING, description="integer rounding of widths and depths")

    @model_validator(mode="after")
    def _valid(self) -> NARSettings:
        for name in ("alpha", "beta", "gamma"):
            if lower_bound(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be ≥ 1: NAR scales networks down")
        if self.derives_gamma:
            if "gamma" in self.model_fields_set:
                raise ValueError("gamma is derived from α and β (α·β²·γ² = 2) when either is a range: leave gamma out")
        elif isinstance(self.gamma, Range):
            raise ValueError("gamma is a range only through α and β: give α or β a range, and leave gamma out")
        elif not self.admissible():
            product = f" (α·β²·γ² = {NARCoefficients.product(*_point(self)):.3f})" if self.is_point() else ""
            raise ValueError(
                f"no (α, β, γ) has α·β²·γ² within {self.tolerance:.0%} of 2{product}: change alpha, beta, gamma "
                "(the paper's: 1.2, 1.1, 1.15) or widen the tolerance"
            )
        return self

    @property
    def derives_gamma(self) -> bool:
        return isinstance(self.alpha, Range) or isinstance(self.beta, Range)

    def admissible(self) -> list[tuple[float, float, float]]:
        """Every (α, β, γ) of the value lists whose α·β²·γ² lies within the tolerance of 2."""
        grid = itertools.product(choices(self.alpha), choices(self.beta), choices(self.gamma))
        return [c for c in grid if abs(NARCoefficients.product(*c) - 2) <= 2 * self.tolerance]


@register
class NAR(PhiMethod[NARSettings]):
    name = "nar"
    summary = "compound scaling"
    Settings = NARSettings
    constraints = (GAMMA_CONSTRAINT, INPUT_CONSTRAINT)

    def suggest(
        self, trial: optuna.trial.BaseTrial, phi: Dimension, settings: NARSettings, original: ArchSpec
    ) -> Candidate[NARSettings] | None:
        drawn_phi = suggest_phi(trial, phi)
        alpha, beta, gamma = _suggest_coefficients(trial, settings, drawn_phi, original)
        if drawn_phi == 0 and gamma < 1:  # the original network whatever α, β, γ: the baseline of any space
            alpha, beta, gamma = PAPER_COEFFICIENTS
        # A draw whose γ^-ϕ takes the input below the family's minimum is as infeasible as
        # γ < 1: the sampler learns the region to avoid, rather than the trial failing. Both
        # are measured for every draw (a γ < 1 side is merely larger). Ranges for α and β are
        # drawn within what ϕ allows (feasible.py): then only ranges that allow nothing are.
        side = scale_side(original.input_size, gamma**-drawn_phi)
        trial.set_constraint(GAMMA_CONSTRAINT, 1 - gamma)
        trial.set_constraint(INPUT_CONSTRAINT, original.min_input_size - side)
        if gamma < 1 or side < original.min_input_size:
            return None
        point = settings.model_copy(update={"alpha": alpha, "beta": beta, "gamma": gamma})
        return self.candidate(original, drawn_phi, point)

    def grid(self, phi: Dimension, settings: NARSettings) -> dict[str, list[Any]]:
        grid = super().grid(phi, settings)
        if not settings.is_point():
            grid["coefficients"] = [_key(c) for c in settings.admissible()]
        return grid

    def baseline_params(self, phi: Dimension, settings: NARSettings) -> dict[str, Any]:
        params = super().baseline_params(phi, settings)
        if (feasible := _feasible(settings, min_side_ratio=1.0)) is not None:  # at ϕ = 0 no side bounds α, β
            params.update(zip(FRACTIONS, feasible.fractions(0.0, *PAPER_COEFFICIENTS[:2]), strict=True))
        elif settings.derives_gamma:
            params.update(alpha=_nearest(settings.alpha, PAPER_COEFFICIENTS[0]), beta=_nearest(settings.beta, PAPER_COEFFICIENTS[1]))
        elif not settings.is_point():
            params["coefficients"] = _key(settings.admissible()[0])
        return params

    def candidate(self, original: ArchSpec, phi: float, settings: NARSettings) -> Candidate[NARSettings]:
        coefficients = NARCoefficients(*_point(settings), settings.tolerance)
        return Candidate(nar_reduce(original, phi, coefficients, settings.rounding), settings)

    def describe(self, candidate: Candidate[NARSettings]) -> dict[str, float]:
        r = candidate.spec.reduction
        return {"alpha": r.alpha, "beta": r.beta, "gamma": r.gamma, **super().describe(candidate)}

    def label(self, candidate: Candidate[NARSettings]) -> str:
        r = candidate.spec.reduction
        return f"{super().label(candidate)} α{r.alpha:.3g} β{r.beta:.3g} γ{r.gamma:.3g}"

    def heading(self, candidate: Candidate[NARSettings]) -> str:
        r = candidate.spec.reduction
        return f"NAR α={r.alpha} β={r.beta} γ={r.gamma} ({r.rounding} rounding)"


def _suggest_coefficients(
    trial: optuna.trial.BaseTrial, settings: NARSettings, phi: float, original: ArchSpec
) -> tuple[float, float, float]:
    if settings.is_point():
        return _point(settings)
    if not settings.derives_gamma:
        key = trial.suggest_categorical("coefficients", [_key(c) for c in settings.admissible()])
        alpha, beta, gamma = (float(v) for v in key.split(","))
        return alpha, beta, gamma
    if (feasible := _feasible(settings, original.min_input_size / original.input_size)) is not None:
        alpha, beta, gamma = feasible.draw(phi, *(trial.suggest_float(name, 0.0, 1.0) for name in FRACTIONS))
    else:
        alpha, beta = (suggest_value(trial, name, getattr(settings, name)) for name in ("alpha", "beta"))
        gamma = math.sqrt(2 / (alpha * beta**2))
    TrialRecord(settings={"alpha": alpha, "beta": beta, "gamma": gamma}).write(trial)
    return alpha, beta, gamma


def _feasible(settings: NARSettings, min_side_ratio: float) -> FeasibleCoefficients | None:
    """The feasible parametrisation, where α and β are both continuous ranges (a list or a step
    is drawn as written, each draw measured)."""
    alpha, beta = settings.alpha, settings.beta
    if not (isinstance(alpha, Range) and isinstance(beta, Range)) or alpha.step or beta.step:
        return None
    return FeasibleCoefficients(alpha, beta, min_side_ratio)


def _nearest(dimension: Dimension, preferred: float) -> float:
    """The baseline's value: a categorical needs one of its choices; a range takes the paper's
    value even outside it (Optuna accepts an enqueued float out of range), as the paper's α
    and β give γ ≥ 1, and a γ < 1 would make the ϕ = 0 draw infeasible."""
    if isinstance(dimension, Range):
        return preferred
    return min(values(dimension), key=lambda v: abs(v - preferred))


def _point(settings: NARSettings) -> tuple[float, float, float]:
    """(α, β, γ) of a candidate's settings, one value each."""
    return point(settings.alpha), point(settings.beta), point(settings.gamma)


def _key(coefficients: tuple[float, float, float]) -> str:
    return ",".join(f"{v:g}" for v in coefficients)
