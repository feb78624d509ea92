"""What every reduction method provides, and the registry that names them.

A method is one object registered under its name: it suggests its parameters in an Optuna
trial, builds its network from `nar train` / `nar reduce` flags, adds what it needs to
training and describes its candidates. Nothing outside this package asks which method it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from nar_search.lightning_modules.settings import RESREP_MASK_INTERVAL, RESREP_MAX_NEW, RESREP_WARMUP_EPOCHS
from nar_search.models.errors import ModelError
from nar_search.models.reduce import DEFAULT_TOLERANCE, PAPER_COEFFICIENTS
from nar_search.models.rounding import DEFAULT_ROUNDING, Rounding
from nar_search.models.spec import ArchSpec

if TYPE_CHECKING:  # type hints only: importing a method stays free of Optuna, Lightning and torch
    import optuna
    from lightning.pytorch.callbacks import Callback

    from nar_search.lightning_modules.classifier import PatchClassifier
    from nar_search.search.config import SearchSpace


@dataclass(frozen=True)
class Candidate:
    """A network a method proposes: its spec, and the method's settings that the spec does not
    record (ResRep's FLOPs target and schedule)."""

    spec: ArchSpec
    settings: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ReductionOptions:
    """The reduction flags of `nar train` and `nar reduce`; each method reads the ones it uses."""

    phi: float = 0.0
    alpha: float = PAPER_COEFFICIENTS[0]
    beta: float = PAPER_COEFFICIENTS[1]
    gamma: float = PAPER_COEFFICIENTS[2]
    tolerance: float = DEFAULT_TOLERANCE
    rounding: Rounding = DEFAULT_ROUNDING
    flops_target: float = 0.5
    mask_interval: int = RESREP_MASK_INTERVAL
    warmup_epochs: int = RESREP_WARMUP_EPOCHS
    max_new: int = RESREP_MAX_NEW


@dataclass(frozen=True)
class TrainingHooks:
    """How a candidate trains: the spec to train and record, the Lightning callbacks the method
    adds, and `finalize`, which makes the evaluated network of the final weights."""

    spec: ArchSpec
    callbacks: Sequence[Callback] = ()
    finalize: Callable[[PatchClassifier], PatchClassifier] | None = None


class ReductionMethod(ABC):
    """One way of making a network cheaper. Subclasses set `name` and `summary` and are
    registered with `@register`."""

    name: ClassVar[str]
    summary: ClassVar[str]  # a few words for --method's help
    # True when the network is only known once trained, so `nar reduce` cannot show it.
    reduces_in_training: ClassVar[bool] = False
    # The Optuna constraints `suggest` may set: a study gives every trial all of them
    # (feasible where unset), as the GP sampler needs the same names in every trial.
    constraints: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def suggest(self, trial: optuna.Trial, space: SearchSpace, original: ArchSpec) -> Candidate | None:
        """This method's parameters for one trial and the network they give; None when they
        are infeasible (recorded as an Optuna constraint, nothing to train)."""

    def grid(self, space: SearchSpace) -> dict[str, list[Any]]:
        """The dimensions this method adds to the grid sampler's space."""
        return {}

    def baseline_params(self, space: SearchSpace) -> dict[str, Any]:
        """This method's parameters in the enqueued ϕ = 0 baseline trial."""
        return {}

    @abstractmethod
    def from_options(self, original: ArchSpec, options: ReductionOptions) -> Candidate:
        """The candidate that `nar train` / `nar reduce` flags ask for."""

    def training(self, candidate: Candidate) -> TrainingHooks:
        """What training `candidate` takes beyond plain training (ResRep: pruning and conversion)."""
        return TrainingHooks(candidate.spec)

    def expected_gflops(self, candidate: Candidate) -> float:
        """What the trained network should cost: a budget is checked against it before training."""
        from nar_search.models.cost import spec_cost  # here: the CLI's --help lists the methods without loading torch

        return spec_cost(candidate.spec).gflops

    def key_suffix(self, candidate: Candidate) -> str:
        """Added to the architecture key, by which trials share one trained network, when equal
        specs train into different networks."""
        return ""

    @abstractmethod
    def describe(self, candidate: Candidate) -> dict[str, float]:
        """The settings a trial records as user attributes (named as the Pareto table reads them)."""

    @abstractmethod
    def label(self, candidate: Candidate) -> str:
        """A short human name, e.g. `nar ϕ2 α1.2 β1.1 γ1.15`."""

    @abstractmethod
    def slug(self, candidate: Candidate) -> str:
        """The candidate in `nar train`'s run names and folders, e.g. `nar-phi2`."""

    def heading(self, candidate: Candidate) -> str:
        """The method and the settings a `nar reduce` sweep shares, over its table."""
        return self.name.upper()


METHODS: dict[str, ReductionMethod] = {}
M = TypeVar("M", bound=type[ReductionMethod])


def register(cls: M) -> M:
    """Class decorator: one instance of `cls` becomes the method named `cls.name`."""
    if cls.name in METHODS:
        raise ValueError(f"a reduction method named {cls.name!r} is already registered")
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> ReductionMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise ModelError(f"unknown method {name!r}: choose from {', '.join(METHODS)}") from None


def method_help(methods: Iterable[ReductionMethod]) -> str:
    return "; ".join(f"{method.name}: {method.summary}" for method in methods)
