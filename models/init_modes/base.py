"""How a candidate network's weights start: one `InitMode` per file, registered by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import nn

from nar_search.models.base_network import BaseNetwork
from nar_search.models.name_registry import Registry
from nar_search.models.spec import ArchSpec


class InitMode(ABC):
    name: ClassVar[str]
    needs_base: ClassVar[bool] = False

    @abstractmethod
    def initialise(self, model: nn.Module, spec: ArchSpec, base: BaseNetwork | None) -> None:
        """Sets the starting weights of `model`, freshly built from `spec`, in place."""


INIT_MODES: Registry[InitMode] = Registry("init mode")


def register_init_mode(mode: type[InitMode]) -> type[InitMode]:
    """Class decorator: one instance of `mode` becomes the init mode named `mode.name`."""
    INIT_MODES.add(mode.name, mode())
    return mode


def get_init_mode(name: str) -> InitMode:
    return INIT_MODES[name]
