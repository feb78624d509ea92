"""The study's search space across its methods: which methods it mixes, the trial's method,
and what the grid sampler and the baseline trial get from each method.

Studies may mix methods (nar, ir, resrep) through `methods`; each method suggests its own
parameters (see search/methods/).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nar_search.search.methods import METHODS, ReductionMethod, get_method

if TYPE_CHECKING:
    import optuna

    from nar_search.search.config import SearchSpace


def methods(space: SearchSpace) -> list[str]:
    # A space named after a method (`space: ir`) searches that method alone.
    return [space.space] if space.space in METHODS else list(space.methods)


def suggest_method(trial: optuna.Trial, space: SearchSpace) -> ReductionMethod:
    """The trial's method: a categorical `method` parameter when the study mixes several."""
    names = methods(space)
    return get_method(trial.suggest_categorical("method", names) if len(names) > 1 else names[0])


def grid_search_space(space: SearchSpace) -> dict[str, list[Any]]:
    """The GridSampler's space for the discrete spaces (paper, grid, ir)."""
    grid: dict[str, list[Any]] = {}
    for name in methods(space):
        grid |= get_method(name).grid(space)
    if len(methods(space)) > 1:
        grid["method"] = methods(space)
    return grid


def baseline_params(space: SearchSpace) -> dict[str, Any]:
    """Parameters of the ϕ = 0 trial, enqueued first: the original network, the AUC reference."""
    params: dict[str, Any] = {}
    for name in methods(space):
        params |= get_method(name).baseline_params(space)
    if len(methods(space)) > 1:
        params["method"] = methods(space)[0]
    return params
