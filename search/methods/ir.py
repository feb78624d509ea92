"""IR, the paper's baseline: only the input side shrinks, by γ^-ϕ; the network is unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nar_search.models.reduce import PAPER_COEFFICIENTS, input_reduce
from nar_search.models.spec import ArchSpec
from nar_search.search.methods.base import Candidate, ReductionOptions, register
from nar_search.search.methods.phi import PhiMethod, suggest_phi

if TYPE_CHECKING:
    import optuna

    from nar_search.search.config import SearchSpace


@register
class IR(PhiMethod):
    name = "ir"
    summary = "input side only"

    def suggest(self, trial: optuna.Trial, space: SearchSpace, original: ArchSpec) -> Candidate:
        return Candidate(input_reduce(original, suggest_phi(trial, space), PAPER_COEFFICIENTS[2]))

    def from_options(self, original: ArchSpec, options: ReductionOptions) -> Candidate:
        return Candidate(input_reduce(original, options.phi, options.gamma))
