"""A study file (YAML), validated: every mistake is one line naming the field and the fix."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from nar_search.data.fractions import TEST_FRACTION, VAL_FRACTION
from nar_search.lightning_modules.distill_settings import DistillSettings
from nar_search.lightning_modules.settings import Scheduler, TrainingConfig
from nar_search.models import DEFAULT_MODEL
from nar_search.models.errors import ModelError
from nar_search.models.init_modes import get_init_mode
from nar_search.search.config_upgrade import upgrade_search_space
from nar_search.search.errors import StudyConfigError
from nar_search.search.methods import Dimension, MethodSettings, Range, get_method
from nar_search.search.methods.settings import lower_bound
from nar_search.search.urls import hide_password


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """The patch source and how it is read and split (see data.sources.SourceOptions)."""

    source: Path
    mpp: float | None = Field(default=None, gt=0)
    val_fraction: float = Field(default=VAL_FRACTION, gt=0, lt=1)
    test_fraction: float = Field(default=TEST_FRACTION, gt=0, lt=1)
    positive: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    slide_pattern: str | None = None


class DistillConfig(_Strict):
    """Learning from the base network as teacher (Hinton-style, on logits)."""

    weight: float = Field(default=DistillSettings.weight, ge=0, le=1)
    temperature: float = Field(default=DistillSettings.temperature, gt=0)


class TrainingSettings(_Strict):
    epochs: int = Field(default=TrainingConfig.epochs, ge=1)
    batch_size: int = Field(default=TrainingConfig.batch_size, ge=1)
    lr: float = Field(default=TrainingConfig.lr, gt=0)
    weight_decay: float = Field(default=TrainingConfig.weight_decay, ge=0)
    scheduler: Scheduler = TrainingConfig.scheduler
    patience: int | None = Field(default=TrainingConfig.patience, ge=1)
    seeds: int = Field(default=TrainingConfig.seeds, ge=1)
    seed: int = TrainingConfig.seed
    precision: str = TrainingConfig.precision
    accelerator: str = TrainingConfig.accelerator
    num_workers: int = Field(default=TrainingConfig.num_workers, ge=0)
    # Every study has a base (given, or its trained baseline): candidates start from it and
    # learn from it by default; `init: scratch` and `distill: null` are the paper's protocol.
    init: str = "inherit"
    distill: DistillConfig | None = DistillConfig()

    @field_validator("init")
    @classmethod
    def _known_init(cls, value: str) -> str:
        return get_init_mode(value).name

    def to_training_config(self) -> TrainingConfig:
        distill = DistillSettings(**self.distill.model_dump()) if self.distill and self.distill.weight > 0 else None
        return TrainingConfig(**self.model_dump(exclude={"distill"}), distill=distill)


class HalvingConfig(_Strict):
    """Successive halving on the Pareto front (`pruner: halving`): candidates train in rungs
    of training.epochs / factor^k epochs, and about 1/factor of each rung's go on."""

    factor: int = Field(default=3, ge=2)
    rungs: int = Field(default=3, ge=2)


class ConfirmConfig(_Strict):
    """When the study ends (or `nar study confirm` runs), the front's points train again with
    more seeds until every point of the front, by its val AUC over its seeds, has `seeds` of
    them (its trial's own among them); 1: no confirmation."""

    seeds: int = Field(default=3, ge=1)
    # Only points whose val AUC is within this of the baseline's: those a selection could pick.
    max_auc_drop: float | None = Field(default=None, ge=0)


class SearchSpace(_Strict):
    """What is searched: ϕ, the reduction axis that NAR and IR share (a list, or a range that a
    sampler draws from), and the methods a study mixes, each with its own settings (see
    search/methods/). `methods: [nar, ir]` is short for the methods with their defaults."""

    phi: Dimension = Field(default_factory=lambda: [0.0, 1.0, 2.0, 3.0])
    methods: dict[str, SerializeAsAny[MethodSettings]] = Field(default_factory=lambda: {"nar": get_method("nar").settings({})})

    @model_validator(mode="before")
    @classmethod
    def _from_earlier_files(cls, data: Any) -> Any:
        return upgrade_search_space(data) if isinstance(data, dict) else data

    @field_validator("methods", mode="before")
    @classmethod
    def _each_method_its_settings(cls, methods: Any) -> Any:
        if isinstance(methods, list):
            methods = {name: {} for name in methods}
        if not isinstance(methods, dict) or not methods:
            raise ValueError("give at least one method, e.g. `methods: {nar: {}}` or `methods: [nar, ir]`")
        try:  # the registry as it is now: methods registered after import count too
            return {name: get_method(name).settings(settings or {}) for name, settings in methods.items()}
        except ModelError as error:
            raise ValueError(str(error)) from None

    @model_validator(mode="after")
    def _valid_phi(self) -> SearchSpace:
        if lower_bound(self.phi) < 0:
            raise ValueError("ϕ values must be ≥ 0 (ϕ = 0 is the original network)")
        return self

    def is_discrete(self) -> bool:
        """Whether the grid sampler can walk the space: no range in it."""
        return not isinstance(self.phi, Range) and all(settings.is_discrete() for settings in self.methods.values())


class StudyConfig(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    model: str = DEFAULT_MODEL
    input_size: int | None = Field(default=None, ge=8)
    # The user's trained original network (a folder of `nar train`/`nar export`, or weights);
    # without one, the baseline trial trains it first.
    base: Path | None = None
    data: DataConfig
    training: TrainingSettings = TrainingSettings()
    search: SearchSpace = SearchSpace()
    sampler: Literal["grid", "random", "tpe", "nsga2", "gp"] = "tpe"
    sampler_seed: int | None = 0
    n_trials: int = Field(default=10, ge=1)
    objective: Literal["pareto", "budget"] = "pareto"
    gflops_budget: float | None = Field(default=None, gt=0)
    # median, hyperband: on val AUC, for budget studies; halving: on the front, for Pareto studies.
    pruner: Literal["median", "hyperband", "halving", "none"] = "median"
    halving: HalvingConfig = HalvingConfig()
    confirm: ConfirmConfig = ConfirmConfig()
    storage: str | None = None  # default: sqlite:///studies/<name>.db
    tracking_uri: str | None = None  # default: the local MLflow store
    workers: int = Field(default=1, ge=1)
    # A candidate's local files (runs/NAME/trial-N) go once its MLflow run holds its network.
    keep_local: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        if self.objective == "budget" and self.gflops_budget is None:
            raise ValueError("objective 'budget' needs gflops_budget (the most GFLOPs a patch may cost)")
        if self.pruner == "halving" and self.objective != "pareto":
            raise ValueError(
                "pruner 'halving' judges candidates on the Pareto front: use objective 'pareto', "
                "or pruner 'median' or 'hyperband' for a budget study"
            )
        if self.pruner == "halving" and self.training.epochs < 2:
            raise ValueError(f"pruner 'halving' needs rungs: training.epochs ({self.training.epochs}) must be at least 2")
        if self.pruner == "halving" and self.training.seeds > 1:
            raise ValueError("pruner 'halving' judges one training per candidate: set training.seeds to 1")
        if self.sampler == "grid" and not self.search.is_discrete():
            raise ValueError("the grid sampler needs values to walk: give lists, not ranges, in search (or use another sampler)")
        return self

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///studies/{self.name}.db"

    def with_methods(self, names: list[str]) -> StudyConfig:
        """The study searching `names`, each with its settings here or its defaults (`--methods`)."""
        methods = {name: self.search.methods[name].model_dump() if name in self.search.methods else {} for name in names}
        return _validated(self.model_dump() | {"search": self.search.model_dump() | {"methods": methods}}, "--methods")

    def masked(self) -> dict[str, Any]:
        """The settings as stored beside the study (Optuna attributes, MLflow artifacts):
        passwords in the storage and tracking URLs masked."""
        settings = cast(dict[str, Any], json.loads(self.model_dump_json()))
        for key in ("storage", "tracking_uri"):
            if settings[key]:
                settings[key] = hide_password(settings[key])
        return settings


def _one_line(error: ValidationError, origin: str) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "study"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{origin}: {where}: {message}{more}"


STDIN = "-"


def load_study_config(path: Path | None, overrides: dict[str, Any]) -> StudyConfig:
    """Reads the YAML study file (if any; `-`: standard input) and applies CLI overrides given as dotted keys."""
    data: dict[str, Any] = {}
    origin = "study flags"
    if path is not None:
        from_stdin = str(path) == STDIN  # how a study's local workers get its settings: never through a file
        origin = "standard input" if from_stdin else str(path)
        if not from_stdin and not path.is_file():
            raise StudyConfigError(f"study file {path} not found: pass an existing YAML file (see configs/)")
        try:
            data = yaml.safe_load(sys.stdin.read() if from_stdin else path.read_text()) or {}
        except yaml.YAMLError as error:
            raise StudyConfigError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise StudyConfigError(f"{path} must hold a mapping of study settings, not {type(data).__name__}")
    for dotted, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return _validated(data, origin)


def _validated(data: dict[str, Any], origin: str) -> StudyConfig:
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as error:
        raise StudyConfigError(_one_line(error, origin)) from None
