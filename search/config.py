"""A study file (YAML), validated: every mistake is one line naming the field and the fix."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nar_search.data.fractions import TEST_FRACTION, VAL_FRACTION
from nar_search.lightning_modules.distill_settings import DistillSettings
from nar_search.lightning_modules.settings import (
    RESREP_MASK_INTERVAL,
    RESREP_MAX_NEW,
    RESREP_WARMUP_EPOCHS,
    Scheduler,
    TrainingConfig,
)
from nar_search.models import DEFAULT_MODEL
from nar_search.models.init_modes import get_init_mode
from nar_search.models.reduce import DEFAULT_TOLERANCE
from nar_search.models.rounding import Rounding
from nar_search.search.errors import StudyConfigError
from nar_search.search.methods import ReductionOptions, get_method
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


class Range(_Strict):
    low: float
    high: float
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be ≥ low ({self.low})")
        return self


class SearchSpace(_Strict):
    """What is searched. `paper`: the paper's α, β, γ, ϕ over `phi_values`; `grid`: every
    (α, β, γ) of the value lists with α·β²·γ² within tolerance of 2, times `phi_values`;
    `bayes`: α and β sampled, γ derived so that α·β²·γ² = 2, ϕ in `phi`; `ir`: input
    reduction over `phi_values`. `methods` adds other methods' trials to the same study."""

    space: Literal["paper", "grid", "bayes", "ir"] = "paper"
    methods: list[str] = Field(default_factory=lambda: ["nar"], min_length=1)
    flops_target_values: list[float] = Field(default_factory=lambda: [0.75, 0.5, 0.3])
    resrep_mask_interval: int = Field(default=RESREP_MASK_INTERVAL, ge=1)
    resrep_warmup_epochs: int = Field(default=RESREP_WARMUP_EPOCHS, ge=0)
    resrep_max_new: int = Field(default=RESREP_MAX_NEW, ge=1)
    phi_values: list[float] = Field(default_factory=lambda: [0, 1, 2, 3])
    phi: Range = Range(low=0, high=3)
    alpha_values: list[float] = Field(default_factory=lambda: [1.1, 1.2, 1.3])
    beta_values: list[float] = Field(default_factory=lambda: [1.05, 1.1, 1.15])
    gamma_values: list[float] = Field(default_factory=lambda: [1.1, 1.15, 1.2])
    alpha: Range = Range(low=1.0, high=1.6)
    beta: Range = Range(low=1.0, high=1.3)
    tolerance: float = Field(default=DEFAULT_TOLERANCE, gt=0, lt=1)
    rounding: Rounding = ReductionOptions.rounding

    @field_validator("methods")
    @classmethod
    def _registered(cls, names: list[str]) -> list[str]:
        for name in names:
            get_method(name)  # the registry as it is now: methods registered after import count too
        return names

    @model_validator(mode="after")
    def _valid_values(self) -> SearchSpace:
        if any(v < 0 for v in self.phi_values) or self.phi.low < 0:
            raise ValueError("ϕ values must be ≥ 0 (ϕ = 0 is the original network)")
        for name in ("alpha_values", "beta_values", "gamma_values"):
            if any(v < 1 for v in getattr(self, name)):
                raise ValueError(f"{name} must all be ≥ 1: NAR scales networks down")
        if any(not 0 < v < 1 for v in self.flops_target_values):
            raise ValueError("flops_target_values are fractions of the original FLOPs, each in (0, 1)")
        if self.alpha.low < 1 or self.beta.low < 1:
            raise ValueError("alpha and beta ranges must start at ≥ 1")
        if self.space == "grid" and not self.admissible_coefficients():
            raise ValueError(
                f"no (α, β, γ) of the grid has α·β²·γ² within {self.tolerance:.0%} of 2: "
                "change alpha_values, beta_values, gamma_values or the tolerance"
            )
        return self

    def admissible_coefficients(self) -> list[tuple[float, float, float]]:
        """The grid's (α, β, γ) whose α·β²·γ² lies within the tolerance of 2."""
        grid = itertools.product(self.alpha_values, self.beta_values, self.gamma_values)
        return [c for c in grid if abs(c[0] * c[1] ** 2 * c[2] ** 2 - 2) <= 2 * self.tolerance]


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
    storage: str | None = None  # default: sqlite:///studies/<name>.db
    tracking_uri: str | None = None  # default: the local MLflow store
    workers: int = Field(default=1, ge=1)

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
        if self.sampler == "grid" and self.search.space == "bayes":
            raise ValueError("the grid sampler needs a discrete space (paper, grid or ir), not bayes")
        return self

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///studies/{self.name}.db"

    def masked(self) -> dict[str, Any]:
        """The settings as stored beside the study (Optuna attributes, MLflow artifacts):
        passwords in the storage and tracking URLs masked."""
        settings = json.loads(self.model_dump_json())
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


def load_study_config(path: Path | None, overrides: dict[str, Any]) -> StudyConfig:
    """Reads the YAML study file (if any) and applies CLI overrides given as dotted keys."""
    data: dict[str, Any] = {}
    origin = "study flags"
    if path is not None:
        origin = str(path)
        if not path.is_file():
            raise StudyConfigError(f"study file {path} not found: pass an existing YAML file (see configs/)")
        try:
            data = yaml.safe_load(path.read_text()) or {}
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
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as error:
        raise StudyConfigError(_one_line(error, origin)) from None
