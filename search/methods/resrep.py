"""ResRep (Ding et al., ICCV 2021): channels pruned while the network trains, until it costs a
target fraction ε of the original's FLOPs. The network to train is the original one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nar_search.models.spec import ArchSpec, Reduction
from nar_search.search.methods.base import Candidate, ReductionMethod, ReductionOptions, TrainingHooks, register

if TYPE_CHECKING:
    import optuna

    from nar_search.search.config import SearchSpace


@register
class ResRep(ReductionMethod):
    name = "resrep"
    summary = "channel pruning"
    reduces_in_training = True

    def suggest(self, trial: optuna.Trial, space: SearchSpace, original: ArchSpec) -> Candidate:
        target = trial.suggest_categorical("flops_target", space.flops_target_values)
        return _candidate(original, target, space.resrep_mask_interval, space.resrep_warmup_epochs, space.resrep_max_new)

    def grid(self, space: SearchSpace) -> dict[str, list[Any]]:
        return {"flops_target": list(space.flops_target_values)}

    def from_options(self, original: ArchSpec, options: ReductionOptions) -> Candidate:
        return _candidate(original, options.flops_target, options.mask_interval, options.warmup_epochs, options.max_new)

    def training(self, candidate: Candidate) -> TrainingHooks:
        from nar_search.lightning_modules.resrep import resrep_training  # Lightning is loaded only to train

        settings = candidate.settings
        callbacks, finalize = resrep_training(
            _target(candidate), settings["mask_interval"], settings["warmup_epochs"], max_new=settings["max_new"]
        )
        spec = candidate.spec.replace(reduction=Reduction(method=self.name, flops_target=_target(candidate)))
        return TrainingHooks(spec, callbacks, finalize)

    def expected_gflops(self, candidate: Candidate) -> float:
        return super().expected_gflops(candidate) * _target(candidate)

    def key_suffix(self, candidate: Candidate) -> str:
        # Every target trains the same original spec into a different network.
        return f"-{self.name}{_target(candidate):g}"

    def describe(self, candidate: Candidate) -> dict[str, float]:
        return {"flops_target": _target(candidate)}

    def label(self, candidate: Candidate) -> str:
        return f"{self.name} ε{_target(candidate):.3g}"

    def slug(self, candidate: Candidate) -> str:
        return f"{self.name}-{_target(candidate):g}"


def _candidate(original: ArchSpec, target: float, mask_interval: int, warmup_epochs: int, max_new: int) -> Candidate:
    settings = {"flops_target": target, "mask_interval": mask_interval, "warmup_epochs": warmup_epochs, "max_new": max_new}
    return Candidate(original, settings)


def _target(candidate: Candidate) -> float:
    return candidate.settings["flops_target"]
