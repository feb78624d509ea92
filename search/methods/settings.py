"""A method's settings as one typed model. The study file's `search.methods.<name>`, the flags of
`nar train` and `nar reduce` and the MLflow params of a run are all read from it.

A searched setting is a `Dimension`: one value (fixed), a list (a categorical, and the grid
sampler's values) or a range `{low, high, step}` (a float the sampler draws). A candidate's
settings hold one value for each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # the settings are read by the CLI, which starts without Optuna
    import optuna


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float
    high: float
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be ≥ low ({self.low})")
        return self


Dimension = float | list[float] | Range


def is_dimension(annotation: Any) -> bool:
    return bool(annotation == Dimension)


@overload
def values(dimension: float | list[float]) -> list[float]: ...
@overload
def values(dimension: Dimension) -> list[float] | Range: ...
def values(dimension: Dimension) -> list[float] | Range:
    """A dimension as the sampler sees it: a list of values (one when fixed) or a range."""
    return dimension if isinstance(dimension, Range | list) else [dimension]


def choices(dimension: Dimension) -> list[float]:
    """The values the grid sampler walks: never a range (a grid study's config refuses them)."""
    assert not isinstance(dimension, Range), f"{dimension} is a range, not values to walk"
    return values(dimension)


def point(dimension: Dimension) -> float:
    """The one value of a candidate's setting."""
    assert not isinstance(dimension, Range | list), f"{dimension} is searched, not one value"
    return dimension


def suggest_value(trial: optuna.trial.BaseTrial, name: str, dimension: Dimension) -> float:
    """The trial's value of a searched setting: a float from a range, else one of the values."""
    if isinstance(dimension, Range):
        return trial.suggest_float(name, dimension.low, dimension.high, step=dimension.step)
    return float(trial.suggest_categorical(name, values(dimension)))


def lower_bound(dimension: Dimension) -> float:
    return dimension.low if isinstance(dimension, Range) else min(values(dimension))


def upper_bound(dimension: Dimension) -> float:
    return dimension.high if isinstance(dimension, Range) else max(values(dimension))


class MethodSettings(BaseModel):
    """The settings of one method. Each field's description is its flag's help."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def dimensions(cls) -> list[str]:
        return [name for name, field in cls.model_fields.items() if is_dimension(field.annotation)]

    def is_point(self) -> bool:
        """Whether every searched setting holds one value: the settings of one candidate."""
        return all(not isinstance(getattr(self, name), list | Range) for name in self.dimensions())

    def is_discrete(self) -> bool:
        """Whether the grid sampler can walk these settings: no range among them."""
        return not any(isinstance(getattr(self, name), Range) for name in self.dimensions())
