"""Opening a study: its base network and original network read and checked before anything
is written, then the Optuna study created (with the ϕ = 0 baseline queued first) or resumed."""

from __future__ import annotations

import time
from typing import Literal

import optuna

from nar_search.models.base_network import BaseNetwork, load_base
from nar_search.models.errors import ModelError
from nar_search.models.reduce import PAPER_COEFFICIENTS, input_reduce
from nar_search.models.registry import original_spec
from nar_search.models.spec import ArchSpec
from nar_search.search.config import StudyConfig
from nar_search.search.errors import StudyConfigError
from nar_search.search.methods.settings import upper_bound
from nar_search.search.study import space
from nar_search.search.study.record import StudyRecord, TrialRecord
from nar_search.search.study.recovery import this_worker
from nar_search.search.study.samplers import make_pruner, make_sampler
from nar_search.search.study.storage import check_parallel, open_storage

POLL_SECONDS = 0.5
CREATION_SECONDS = 30  # how long a joining worker waits for the study's maker to queue the baseline
OBJECTIVE_NAMES = ("val_auc", "gflops")  # a Pareto study's objectives, as dashboards show them; a budget study has the first


def given_base(config: StudyConfig) -> BaseNetwork | None:
    """The study file's base network, read and checked before anything is written."""
    return load_base(config.base, config.model, config.input_size) if config.base else None


def original_network(config: StudyConfig, base: BaseNetwork | None) -> ArchSpec:
    """The network the study reduces: the given base's, else the model at the study's input side."""
    return base.spec if base else original_spec(config.model, config.input_size)


def check_largest_phi(config: StudyConfig, original: ArchSpec) -> None:
    """A ϕ that collapses the input would fail its trials one by one: refuse it up front."""
    largest = upper_bound(config.search.phi)
    try:
        input_reduce(original, largest, PAPER_COEFFICIENTS[2])
    except ModelError as error:
        raise StudyConfigError(f"search.phi: the largest ϕ ({largest:g}) is too large: {error}") from None


def open_study(config: StudyConfig, base: BaseNetwork | None = None) -> optuna.Study:
    """Creates the study, or loads it to resume or to join it. Of workers that start together,
    exactly one creates it (the storage refuses a second study of the name) and queues the ϕ = 0
    baseline first; the others join once it has."""
    check_parallel(config.storage_url, config.workers)
    check_largest_phi(config, original_network(config, base))
    directions: list[Literal["maximize", "minimize"]] = ["maximize", "minimize"] if config.objective == "pareto" else ["maximize"]
    storage = open_storage(config.storage_url)
    sampler, pruner = make_sampler(config), make_pruner(config)
    try:
        study = optuna.create_study(study_name=config.name, storage=storage, sampler=sampler, pruner=pruner, directions=directions)
    except optuna.exceptions.DuplicatedStudyError:
        return _joined(optuna.load_study(study_name=config.name, storage=storage, sampler=sampler, pruner=pruner), config)
    StudyRecord(config=config.masked(), creator=this_worker()).write(study)  # first: a worker joining by storage reads it
    study.set_metric_names(list(OBJECTIVE_NAMES[: len(directions)]))
    study.enqueue_trial(space.baseline_params(config.search), user_attrs=TrialRecord(baseline=True).attrs())
    return study


def _joined(study: optuna.Study, config: StudyConfig) -> optuna.Study:
    """A study that another process made: once its baseline is queued. A study whose maker
    stopped before that (a few milliseconds' window) gets its baseline here."""
    deadline = time.monotonic() + CREATION_SECONDS
    while not study.get_trials(deepcopy=False) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    if study.metric_names is None:  # made before its objectives were named
        study.set_metric_names(list(OBJECTIVE_NAMES[: len(study.directions)]))
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(space.baseline_params(config.search), user_attrs=TrialRecord(baseline=True).attrs())
        StudyRecord(config=config.masked()).write(study)
    return study
