"""What the trial executor is given and what it gives back: a candidate to train (`TrialRequest`)
and the figures of its network (`TrialResult`), the part of the trial's record it fills."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any

import optuna

from nar_search.models.cost import spec_cost
from nar_search.models.spec import ArchSpec, Reduction
from nar_search.search.methods import Candidate, ReductionMethod
from nar_search.search.study.record import RESULT_FIELDS, TrialRecord
from nar_search.search.training_run import CandidateOutcome


def architecture_key(spec: ArchSpec) -> str:
    """Equal for candidates that round to the same network at the same input side."""
    shape = spec.replace(reduction=Reduction()).to_json(indent=None)
    return hashlib.sha1(shape.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrialRequest:
    """A feasible candidate of a running trial, as its method drew it."""

    trial: optuna.trial.BaseTrial  # a FixedTrial when confirmation draws a trained trial again
    method: ReductionMethod[Any]
    candidate: Candidate[Any]
    baseline: bool  # the ϕ = 0 trial: evaluates the given base, or trains the one the others start from

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def label(self) -> str:
        return self.method.label(self.candidate)

    @property
    def run_name(self) -> str:
        """The trial's MLflow run name: its number and its candidate, e.g. `trial 4 · nar ϕ2 α1.2 β1.1 γ1.15`,
        or `trial 0 · baseline · …` for the reference every other trial is measured against."""
        return f"trial {self.number} · {'baseline · ' if self.baseline else ''}{self.label}"

    @property
    def architecture(self) -> str:
        """Equal for trials that would train the same network the same way: the later ones reuse the result."""
        return architecture_key(self.candidate.spec) + self.method.key_suffix(self.candidate)

    @property
    def params(self) -> dict[str, Any]:
        """What the trial's MLflow run records of its method: the candidate's settings."""
        return {self.method.name: self.candidate.settings.model_dump(mode="json")}

    @property
    def expected_gflops(self) -> float:
        return self.method.expected_gflops(self.candidate)

    def description(self) -> TrialRecord:
        """The request's part of the trial's record, written before anything trains."""
        return TrialRecord(
            settings=self.method.describe(self.candidate),
            label=self.label,
            input_size=self.candidate.spec.input_size,
            spec=self.candidate.spec.to_dict(),
            architecture=self.architecture,
            expected_gflops=self.expected_gflops,
            training_gflops=spec_cost(self.candidate.spec).gflops,
        )


@dataclass(frozen=True)
class TrialResult:
    """A trial's network and its figures: trained here, or reused from the trial that trained it."""

    gflops: float
    params: int
    val_auc: float
    val_auc_std: float | None
    test_auc: float
    test_auc_std: float | None
    latency_ms: float | None
    spec: dict[str, Any] | None = None  # the trained network's (ResRep's is thinner than the candidate's)
    seconds: float | None = None
    epochs: int | None = None
    stopped_at_rung: int | None = None  # epochs, when a rung stopped the candidate as dominated
    reused_from: int | None = None

    @classmethod
    def trained(cls, outcome: CandidateOutcome, stopped_at_rung: int | None) -> TrialResult:
        figures = {f.name: getattr(outcome, f.name) for f in fields(cls) if hasattr(outcome, f.name)}
        return cls(**figures | {"spec": outcome.spec.to_dict(), "stopped_at_rung": stopped_at_rung})

    @classmethod
    def reused(cls, twin: optuna.trial.FrozenTrial) -> TrialResult:
        record = TrialRecord.of(twin)
        return cls(
            **{name: getattr(record, name) for name in RESULT_FIELDS},
            stopped_at_rung=record.stopped_at_rung,
            reused_from=twin.number,
        )

    def record(self) -> TrialRecord:
        return TrialRecord(**{f.name: getattr(self, f.name) for f in fields(self)})
