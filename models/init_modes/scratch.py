"""`scratch`: the builder's random initialisation, as the paper trained every candidate."""

from __future__ import annotations

from torch import nn

from nar_search.models.base_network import BaseNetwork
from nar_search.models.init_modes.base import InitMode, register_init_mode
from nar_search.models.spec import ArchSpec


@register_init_mode
class Scratch(InitMode):
    name = "scratch"

    def initialise(self, model: nn.Module, spec: ArchSpec, base: BaseNetwork | None) -> None:
        pass
