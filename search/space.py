"""Search spaces: how a trial's parameters become a reduced architecture.

`paper` fixes α, β, γ at 1.2, 1.1, 1.15 and walks ϕ; `grid` crosses every admissible
(α, β, γ) with ϕ; `bayes` samples α and β and derives γ so that α·β²·γ² = 2 exactly (a
derived γ < 1 is infeasible, recorded as an Optuna constraint, never clipped); `ir`
shrinks the input only. Studies may mix methods (nar, ir, resrep) through `methods`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna

from models.reduce import PAPER_COEFFICIENTS, NARCoefficients, input_reduce, nar_reduce
from models.spec import ArchSpec
from search.config import SearchSpace

GAMMA_CONSTRAINT = "gamma_below_one"


@dataclass(frozen=True)
class Candidate:
    method: str
    spec: ArchSpec | None  # None: infeasible, nothing to build
    flops_target: float | None = None


def methods(space: SearchSpace) -> list[str]:
    return ["ir"] if space.space == "ir" else list(space.methods)


def grid_search_space(space: SearchSpace) -> dict[str, list[Any]]:
    """The GridSampler's space for the discrete spaces (paper, grid, ir)."""
    # ϕ = 0 is the enqueued baseline, which the GridSampler does not count as visited.
    grid: dict[str, list[Any]] = {"phi": [v for v in space.phi_values if v > 0] or [0.0]}
    if space.space == "grid":
        grid["coefficients"] = [_key(c) for c in space.admissible_coefficients()]
    if len(methods(space)) > 1:
        grid["method"] = methods(space)
    if "resrep" in methods(space):
        grid["flops_target"] = list(space.flops_target_values)
    return grid


def baseline_params(space: SearchSpace) -> dict[str, Any]:
    """Parameters of the ϕ = 0 trial, enqueued first: the original network, the AUC reference."""
    params: dict[str, Any] = {"phi": 0.0}
    if len(methods(space)) > 1:
        params["method"] = methods(space)[0]
    if space.space == "grid":
        params["coefficients"] = _key(space.admissible_coefficients()[0])
    if space.space == "bayes":
        params.update(alpha=PAPER_COEFFICIENTS[0], beta=PAPER_COEFFICIENTS[1])
    return params


def suggest(trial: optuna.Trial, space: SearchSpace, original: ArchSpec) -> Candidate:
    method = methods(space)[0]
    if len(methods(space)) > 1:
        method = trial.suggest_categorical("method", methods(space))
    if method == "resrep":
        target = trial.suggest_categorical("flops_target", space.flops_target_values)
        return Candidate("resrep", original, flops_target=target)
    phi = _suggest_phi(trial, space)
    if method == "ir":
        return Candidate("ir", input_reduce(original, phi, PAPER_COEFFICIENTS[2]))
    alpha, beta, gamma = _suggest_coefficients(trial, space)
    trial.set_constraint(GAMMA_CONSTRAINT, 1 - gamma)
    if gamma < 1:
        return Candidate("nar", None)
    coefficients = NARCoefficients(alpha, beta, gamma, tolerance=space.tolerance)
    return Candidate("nar", nar_reduce(original, phi, coefficients, space.rounding))


def _suggest_phi(trial: optuna.Trial, space: SearchSpace) -> float:
    if space.space == "bayes":
        return trial.suggest_float("phi", space.phi.low, space.phi.high, step=space.phi.step)
    return float(trial.suggest_categorical("phi", space.phi_values))


def _suggest_coefficients(trial: optuna.Trial, space: SearchSpace) -> tuple[float, float, float]:
    if space.space == "paper":
        return PAPER_COEFFICIENTS
    if space.space == "grid":
        key = trial.suggest_categorical("coefficients", [_key(c) for c in space.admissible_coefficients()])
        return tuple(float(v) for v in key.split(","))  # type: ignore[return-value]
    alpha = trial.suggest_float("alpha", space.alpha.low, space.alpha.high)
    beta = trial.suggest_float("beta", space.beta.low, space.beta.high)
    gamma = math.sqrt(2 / (alpha * beta**2))
    trial.set_user_attr("gamma", gamma)
    return alpha, beta, gamma


def _key(coefficients: tuple[float, float, float]) -> str:
    return ",".join(f"{v:g}" for v in coefficients)
