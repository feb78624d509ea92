"""Distillation's settings, apart from its Lightning code so that `nar train --help` can show
their defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DistillSettings:
    weight: float = 0.5  # of the distillation term; 1 - weight goes to the label loss
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 1 or self.temperature <= 0:
            raise ValueError(f"distillation needs 0 ≤ weight ≤ 1 and temperature > 0, not {self}")
