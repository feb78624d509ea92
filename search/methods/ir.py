"""IR, the paper's baseline: only the input side shrinks, by γ^-ϕ; the network is unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from nar_search.models.reduce import PAPER_COEFFICIENTS, input_reduce
from nar_search.models.spec import ArchSpec
from nar_search.search.methods.base import Candidate, register
from nar_search.search.methods.phi import PhiMethod, suggest_phi
from nar_search.search.methods.settings import Dimension, MethodSettings

if TYPE_CHECKING:
    import optuna


class IRSettings(MethodSettings):
    gamma: float = Field(default=PAPER_COEFFICIENTS[2], ge=1, description="resolution coefficient γ")


@register
class IR(PhiMethod[IRSettings]):
    name = "ir"
    summary = "input side only"
    Settings = IRSettings

    def suggest(self, trial: optuna.trial.BaseTrial, phi: Dimension, settings: IRSettings, original: ArchSpec) -> Candidate[IRSettings]:
        return self.candidate(original, suggest_phi(trial, phi), settings)

    def candidate(self, original: ArchSpec, phi: float, settings: IRSettings) -> Candidate[IRSettings]:
        return Candidate(input_reduce(original, phi, settings.gamma), settings)
