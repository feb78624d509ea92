"""The study's search space across its methods: which methods it mixes, the trial's method
and candidate, and what the grid sampler and the baseline trial get from each method.

Studies may mix methods (nar, ir, resrep) through `search.methods`; each method suggests its
own parameters from its own settings (see search/methods/).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nar_search.search.methods import Candidate, ReductionMethod, get_method

if TYPE_CHECKING:
    import optuna

    from nar_search.models.spec import ArchSpec
    from nar_search.search.config import SearchSpace


def suggest(trial: optuna.trial.BaseTrial, space: SearchSpace, original: ArchSpec) -> tuple[ReductionMethod[Any], Candidate[Any] | None]:
    """The trial's method (a categorical `method` parameter when the study mixes several) and
    its candidate; None when the draw is infeasible."""
    names = list(space.methods)
    method = get_method(trial.suggest_categorical("method", names) if len(names) > 1 else names[0])
    return method, method.suggest(trial, space.phi, space.methods[method.name], original)


def grid_search_space(space: SearchSpace) -> dict[str, list[Any]]:
    """The GridSampler's space (every dimension a list)."""
    grid: dict[str, list[Any]] = {}
    for name, settings in space.methods.items():
        grid |= get_method(name).grid(space.phi, settings)
    if len(space.methods) > 1:
        grid["method"] = list(space.methods)
    return grid


def baseline_params(space: SearchSpace) -> dict[str, Any]:
    """Parameters of the ϕ = 0 trial, enqueued first: the original network, the AUC reference."""
    params: dict[str, Any] = {}
    for name, settings in space.methods.items():
        params |= get_method(name).baseline_params(space.phi, settings)
    if len(space.methods) > 1:
        params["method"] = next(iter(space.methods))
    return params
