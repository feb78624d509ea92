"""`inherit`: start from the base network's weights, cut to the candidate's depths and widths
through the dependency graph (an unchanged shape, as for IR and ResRep, takes them whole),
keeping the first channels; `inherit-magnitude` keeps the channels whose weights weigh most."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from nar_search.models.base_network import BaseNetwork
from nar_search.models.errors import ModelError
from nar_search.models.inherit import inherit_weights
from nar_search.models.init_modes.base import InitMode, register_init_mode
from nar_search.models.spec import ArchSpec


@register_init_mode
class Inherit(InitMode):
    name = "inherit"
    needs_base = True
    by_magnitude: ClassVar[bool] = False

    def initialise(self, model: nn.Module, spec: ArchSpec, base: BaseNetwork | None) -> None:
        if base is None:
            raise ModelError(f"init {self.name!r} needs a base network: give one (base: / --base) or use init 'scratch'")
        inherit_weights(model, spec, base.build(), self.by_magnitude)


@register_init_mode
class InheritByMagnitude(Inherit):
    name = "inherit-magnitude"
    by_magnitude = True
