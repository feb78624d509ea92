"""Architecture specs: a small, frozen, JSON-serialisable description per family that a
builder turns into an `nn.Module`. A reduced network is a spec plus weights."""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self

from nar_search.models.errors import ModelError
from nar_search.models.name_registry import Registry
from nar_search.models.rounding import DEFAULT_ROUNDING, Rounding

if TYPE_CHECKING:  # type hints only: a spec (and the CLI's --help) stays free of torch until it builds
    from torch import nn


@dataclass(frozen=True)
class Reduction:
    """How a spec was derived from its family's original network (ϕ = 0 is the original)."""

    method: str = "none"  # none | nar | ir | resrep
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    phi: float = 0.0
    depth_factor: float = 1.0
    width_factor: float = 1.0
    resolution_factor: float = 1.0
    rounding: Rounding = DEFAULT_ROUNDING
    flops_target: float | None = None  # ResRep's knob: fraction of the original FLOPs


@dataclass(frozen=True)
class Stage:
    """One row of the reduction table: a stage (or block group), its blocks and widths."""

    name: str
    blocks: int
    widths: str


@dataclass(frozen=True, kw_only=True)
class ArchSpec:
    """Base of every family's spec. Subclasses add their own shape fields and implement
    `scaled` (depth and width factors applied with a rounding mode), `build` and `stages`."""

    family: ClassVar[str]
    min_input_size: ClassVar[int] = 32
    # The timm models this family reproduces exactly (the paper's networks); any other timm
    # CNN goes the generic way (timm_generic.py).
    exact_models: ClassVar[tuple[str, ...]] = ()

    model_name: str
    input_size: int
    num_classes: int = 2
    reduction: Reduction = field(default_factory=Reduction)

    def scaled(self, depth_factor: float, width_factor: float, rounding: Rounding) -> Self:
        raise NotImplementedError

    def build(self) -> nn.Module:
        raise NotImplementedError

    def stages(self) -> list[Stage]:
        raise NotImplementedError

    def truncate(self, original: nn.Module) -> None:
        """Shortens an original (ϕ = 0) network of this family, in place, to this spec's depths,
        under the module names this spec's `build` gives (for weight inheritance)."""
        raise ModelError(f"weight inheritance is not available for the {self.family} family")

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **dataclasses.asdict(self)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


_SPEC_TYPES: Registry[type[ArchSpec]] = Registry("architecture family")
_EXACT_MODELS: Registry[type[ArchSpec]] = Registry("exactly reproduced model")
# Imported by spec_types(), not with this module (see there); a test keeps the list whole.
FAMILY_MODULES = ("resnetv2", "inception_v4", "inception_resnet_v2", "timm_generic", "resrep")


def register_spec(spec_type: type[ArchSpec]) -> type[ArchSpec]:
    """Class decorator: makes a family's spec type loadable from JSON by its `family` name,
    and the family of the timm models it reproduces exactly."""
    _SPEC_TYPES.add(spec_type.family, spec_type)
    for model_name in spec_type.exact_models:
        _EXACT_MODELS.add(model_name, spec_type)
    return spec_type


def exact_families() -> Registry[type[ArchSpec]]:
    """The family of each timm model reproduced exactly, by model name."""
    spec_types()
    return _EXACT_MODELS


def spec_types() -> Registry[type[ArchSpec]]:
    """Every family's spec type by name, complete however little of the package the caller
    imported (a notebook that loads a checkpoint imports the classifier only). The families are
    imported here rather than with this module: they bring torch, and the CLI's --help starts
    without it. They import timm and Torch-Pruning only where they build a network: both bring
    torchvision, 2-3 s of a process's start, and reading a spec (as nar predict on ONNX Runtime
    does) builds nothing."""
    for module in FAMILY_MODULES:
        importlib.import_module(f"nar_search.models.{module}")
    return _SPEC_TYPES


def spec_from_dict(data: dict[str, Any]) -> ArchSpec:
    data = dict(data)
    family = data.pop("family", None)
    spec_type = spec_types()[str(family)]
    names = {f.name for f in dataclasses.fields(spec_type)}
    unknown = set(data) - names
    if unknown:
        raise ModelError(f"spec of family {family!r} has unknown fields {sorted(unknown)}: was it written by another version?")
    data["reduction"] = Reduction(**data.get("reduction", {}))
    return spec_type(**{name: _tuples(value) for name, value in data.items()})


def _tuples(value: Any) -> Any:
    # JSON has lists only; specs hold tuples so they stay hashable and compare equal.
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def spec_from_json(text: str) -> ArchSpec:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ModelError(f"architecture spec is not valid JSON ({error}): export it again with `nar reduce --json`") from None
    return spec_from_dict(data)
