"""How a candidate network's weights start: one `InitMode` per file, registered by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import nn

from nar_search.models.base_network import BaseNetwork
from nar_search.models.errors import ModelError
from nar_search.models.spec import ArchSpec

INIT_MODES: dict[str, InitMode] = {}


class InitMode(ABC):
    name: ClassVar[str]
    needs_base: ClassVar[bool] = False

    @abstractmethod
    def initialise(self, model: nn.Module, spec: ArchSpec, base: BaseNetwork | None) -> None:
        """Sets the starting weights of `model`, freshly built from `spec`, in place."""


def register_init_mode(mode: type[InitMode]) -> type[InitMode]:
    INIT_MODES[mode.name] = mode()
    return mode


def get_init_mode(name: str) -> InitMode:
    if name not in INIT_MODES:
        raise ModelError(f"unknown init mode {name!r}: choose one of {', '.join(sorted(INIT_MODES))}")
    return INIT_MODES[name]
