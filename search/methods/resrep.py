"""ResRep (Ding et al., ICCV 2021): channels pruned while the network trains, until it costs a
target fraction ε of the original's FLOPs. The network to train is the original one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from nar_search.lightning_modules.settings import RESREP_MASK_INTERVAL, RESREP_MAX_NEW, RESREP_WARMUP_EPOCHS
from nar_search.models.spec import ArchSpec, Reduction
from nar_search.search.methods.base import Candidate, ReductionMethod, TrainingHooks, register
from nar_search.search.methods.settings import Dimension, MethodSettings, choices, lower_bound, point, suggest_value, upper_bound

if TYPE_CHECKING:
    import optuna


class ResRepSettings(MethodSettings):
    flops_target: Dimension = Field(default=0.5, description="FLOPs to keep, as a fraction of the original (a study: a list or range)")
    mask_interval: int = Field(default=RESREP_MASK_INTERVAL, ge=1, description="optimiser steps between mask updates")
    warmup_epochs: int = Field(default=RESREP_WARMUP_EPOCHS, ge=0, description="epochs before the first mask update")
    max_new: int = Field(default=RESREP_MAX_NEW, ge=1, description="channels masked at most per update")

    @model_validator(mode="after")
    def _fractions(self) -> ResRepSettings:
        if not 0 < lower_bound(self.flops_target) <= upper_bound(self.flops_target) < 1:
            raise ValueError("flops_target is a fraction of the original FLOPs, in (0, 1)")
        return self


@register
class ResRep(ReductionMethod[ResRepSettings]):
    name = "resrep"
    summary = "channel pruning"
    Settings = ResRepSettings
    reduces_in_training = True

    def suggest(
        self, trial: optuna.trial.BaseTrial, phi: Dimension, settings: ResRepSettings, original: ArchSpec
    ) -> Candidate[ResRepSettings]:
        drawn = suggest_value(trial, "flops_target", settings.flops_target)
        return self.candidate(original, 0.0, settings.model_copy(update={"flops_target": drawn}))

    def grid(self, phi: Dimension, settings: ResRepSettings) -> dict[str, list[Any]]:
        return {"flops_target": choices(settings.flops_target)}

    def candidate(self, original: ArchSpec, phi: float, settings: ResRepSettings) -> Candidate[ResRepSettings]:
        return Candidate(original, settings)

    def training(self, candidate: Candidate[ResRepSettings]) -> TrainingHooks:
        from nar_search.lightning_modules.resrep import resrep_training  # Lightning is loaded only to train

        settings = candidate.settings
        callbacks, finalize = resrep_training(_target(candidate), settings.mask_interval, settings.warmup_epochs, max_new=settings.max_new)
        spec = candidate.spec.replace(reduction=Reduction(method=self.name, flops_target=_target(candidate)))
        return TrainingHooks(spec, callbacks, finalize)

    def expected_gflops(self, candidate: Candidate[ResRepSettings]) -> float:
        return super().expected_gflops(candidate) * _target(candidate)

    def key_suffix(self, candidate: Candidate[ResRepSettings]) -> str:
        # Every target trains the same original spec into a different network.
        return f"-{self.name}{_target(candidate):g}"

    def describe(self, candidate: Candidate[ResRepSettings]) -> dict[str, float]:
        return {"flops_target": _target(candidate)}

    def label(self, candidate: Candidate[ResRepSettings]) -> str:
        return f"{self.name} ε{_target(candidate):.3g}"

    def slug(self, candidate: Candidate[ResRepSettings]) -> str:
        return f"{self.name}-{_target(candidate):g}"


def _target(candidate: Candidate[ResRepSettings]) -> float:
    return point(candidate.settings.flops_target)
