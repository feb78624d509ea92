"""What every reduction method provides, and the registry that names them.

A method is one object registered under its name: it suggests its parameters in an Optuna
trial, builds its network from `nar train` / `nar reduce` flags, adds what it needs to
training and describes its candidates. Nothing outside this package asks which method it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import ValidationError

from nar_search.models.errors import ModelError
from nar_search.models.name_registry import Registry
from nar_search.models.spec import ArchSpec
from nar_search.search.methods.settings import Dimension, MethodSettings

if TYPE_CHECKING:  # type hints only: importing a method stays free of Optuna, Lightning and torch
    import optuna
    from lightning.pytorch.callbacks import Callback

    from nar_search.lightning_modules.classifier import PatchClassifier


S = TypeVar("S", bound=MethodSettings)


@dataclass(frozen=True)
class Candidate(Generic[S]):
    """A network a method proposes: its spec, and the method's settings that gave it, one value
    each (ResRep's FLOPs target and schedule are known only to them)."""

    spec: ArchSpec
    settings: S


@dataclass(frozen=True)
class TrainingHooks:
    """How a candidate trains: the spec to train and record, the Lightning callbacks the method
    adds, and `finalize`, which makes the evaluated network of the final weights."""

    spec: ArchSpec
    callbacks: Sequence[Callback] = ()
    finalize: Callable[[PatchClassifier], PatchClassifier] | None = None


class ReductionMethod(ABC, Generic[S]):
    """One way of making a network cheaper. Subclasses set `name`, `summary` and `Settings`
    and are registered with `@register`. ϕ, the study's reduction axis, is passed apart from
    the settings: the methods walked by ϕ share it (see phi.py)."""

    name: ClassVar[str]
    summary: ClassVar[str]  # a few words for --method's help
    Settings: type[S]
    # True when the network is only known once trained, so `nar reduce` cannot show it.
    reduces_in_training: ClassVar[bool] = False
    # The Optuna constraints `suggest` may set: a study gives every trial all of them
    # (feasible where unset), as the GP sampler needs the same names in every trial.
    constraints: ClassVar[tuple[str, ...]] = ()

    def settings(self, values: Mapping[str, Any]) -> S:
        """This method's settings from a study file or flags; a mistake is one line naming the setting."""
        try:
            return self.Settings.model_validate(values)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join([self.name, *(str(p) for p in first["loc"])])
            raise ModelError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None

    @abstractmethod
    def suggest(self, trial: optuna.trial.BaseTrial, phi: Dimension, settings: S, original: ArchSpec) -> Candidate[S] | None:
        """This method's parameters for one trial and the network they give; None when they
        are infeasible (recorded as an Optuna constraint, nothing to train)."""

    def grid(self, phi: Dimension, settings: S) -> dict[str, list[Any]]:
        """The dimensions this method adds to the grid sampler's space."""
        return {}

    def baseline_params(self, phi: Dimension, settings: S) -> dict[str, Any]:
        """This method's parameters in the enqueued ϕ = 0 baseline trial."""
        return {}

    @abstractmethod
    def candidate(self, original: ArchSpec, phi: float, settings: S) -> Candidate[S]:
        """The one candidate that `nar train` / `nar reduce` flags ask for (`settings` hold one value each)."""

    def training(self, candidate: Candidate[S]) -> TrainingHooks:
        """What training `candidate` takes beyond plain training (ResRep: pruning and conversion)."""
        return TrainingHooks(candidate.spec)

    def expected_gflops(self, candidate: Candidate[S]) -> float:
        """What the trained network should cost: a budget is checked against it before training."""
        from nar_search.models.cost import spec_cost  # here: the CLI's --help lists the methods without loading torch

        return spec_cost(candidate.spec).gflops

    def key_suffix(self, candidate: Candidate[S]) -> str:
        """Added to the architecture key, by which trials share one trained network, when equal
        specs train into different networks."""
        return ""

    @abstractmethod
    def describe(self, candidate: Candidate[S]) -> dict[str, float]:
        """The settings a trial records as user attributes (named as the Pareto table reads them)."""

    @abstractmethod
    def label(self, candidate: Candidate[S]) -> str:
        """A short human name, e.g. `nar ϕ2 α1.2 β1.1 γ1.15`."""

    @abstractmethod
    def slug(self, candidate: Candidate[S]) -> str:
        """The candidate in `nar train`'s run names and folders, e.g. `nar-phi2`."""

    def heading(self, candidate: Candidate[S]) -> str:
        """The method and the settings a `nar reduce` sweep shares, over its table."""
        return self.name.upper()


METHODS: Registry[ReductionMethod[Any]] = Registry("method")
M = TypeVar("M", bound=type[ReductionMethod[Any]])


def register(cls: M) -> M:
    """Class decorator: one instance of `cls` becomes the method named `cls.name`."""
    METHODS.add(cls.name, cls())
    return cls


def get_method(name: str) -> ReductionMethod[Any]:
    return METHODS[name]


def method_help(methods: Iterable[ReductionMethod[Any]]) -> str:
    return "; ".join(f"{method.name}: {method.summary}" for method in methods)
