"""The study's sampler and pruner, as its file names them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nar_search.search.config import StudyConfig
from nar_search.search.study import space


class EnqueueSafeGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler stops a worker only once the grid is finished, so a worker that ends
    its trial while another still trains the last point starts one more trial, on a point drawn
    again. Here a worker stops as soon as every point is started (finished or running
    elsewhere); what is left (a retry, a point whose worker died) is for the study's next
    round. It also serves the enqueued trials (the baseline, retries), which have no grid id."""

    def __init__(self, search_space: Mapping[str, Sequence[Any]], seed: int | None = None) -> None:
        super().__init__(search_space, seed)
        self.points = math.prod(len(values) for values in search_space.values())

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        trials = study.get_trials(deepcopy=False)
        started = {t.system_attrs["grid_id"] for t in trials if "grid_id" in t.system_attrs and t.state != TrialState.WAITING}
        if started >= set(range(self.points)):
            study.stop()


def make_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    seed = config.sampler_seed
    if config.sampler == "grid":
        return EnqueueSafeGridSampler(space.grid_search_space(config.search), seed=seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(4, config.workers * 2), seed=seed)
    # A third of a small study's trials, at most Optuna's ten, are random before the model guides.
    startup = max(2, min(10, config.n_trials // 3))
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    # Parallel workers (each runs with workers = 1): a running trial counts as a poor result, so they spread out.
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=startup,
        multivariate=True,
        group=True,
        constant_liar=True,
    )


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """Optuna's pruners for budget studies; halving, for Pareto studies, is the rungs' own."""
    if config.objective != "budget" or config.pruner in ("none", "halving"):
        return optuna.pruners.NopPruner()
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.training.epochs)
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
