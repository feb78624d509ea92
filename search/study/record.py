"""What a study and each of its trials record in Optuna's user attributes, typed.

The field names are the attribute keys: existing studies, the dashboards and bench/ read them,
so a field is never renamed. A record is written in parts, as a trial learns them (its worker
first, its MLflow run once created, its result last), and other workers read the parts as they
appear: fields left None are not written, so writing one part never erases another. Trials
recorded before a field existed read it as None. Credentials never go into a record: the
study's settings are stored with their passwords masked (`StudyConfig.masked`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # type hints only: reading a record needs no Optuna
    import optuna
    from _typeshed import DataclassInstance
    from optuna.trial import FrozenTrial

T = TypeVar("T")


def recorded(value: T | None) -> T:
    """A field that the record holds by now: a trained trial's figures, its method and input side,
    a study's config."""
    assert value is not None, "a record lacks a field that it holds by now"
    return value


def _set_fields(record: DataclassInstance) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record) if f.name != "settings" and getattr(record, f.name) is not None}


@dataclass(frozen=True)
class TrialRecord:
    """A trial's outcome and how it came about; `settings` are its method's own parameters
    (α, β, γ, ϕ, ResRep's FLOPs target, ...), each stored under its own name."""

    baseline: bool | None = None  # the ϕ = 0 trial (the AUC reference), marked when enqueued
    retry_of: int | None = None  # the failed trial this one runs again
    worker: dict[str, Any] | None = None  # who runs it (`recovery.this_worker`): a dead worker's trial is failed
    failure: str | None = None  # why recovery failed it
    method: str | None = None
    label: str | None = None  # the candidate as its method names it, e.g. `nar ϕ2 α1.2 β1.1 γ1.15`
    input_size: int | None = None
    spec: dict[str, Any] | None = None  # the candidate's, then the trained network's (ResRep's is thinner)
    architecture: str | None = None  # equal for trials of one network: the later ones reuse its result
    settings: Mapping[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    expected_gflops: float | None = None  # known before training: what successive halving compares
    training_gflops: float | None = None  # what the network costs a patch as it trains (ResRep's before it thins)
    rungs: list[dict[str, Any]] | None = None  # [{"epochs", "val_auc", "promoted"}, ...] in the order reached
    stopped_at_rung: int | None = None  # epochs trained by a candidate that a rung stopped
    reused_from: int | None = None  # the trial that trained this network
    gflops: float | None = None
    params: int | None = None
    val_auc: float | None = None
    val_auc_std: float | None = None
    test_auc: float | None = None
    test_auc_std: float | None = None
    latency_ms: float | None = None
    seconds: float | None = None
    epochs: int | None = None  # trained, summed over seeds (0 for a given base, evaluated only)

    def __post_init__(self) -> None:
        if clash := _KEYS & self.settings.keys():
            raise ValueError(f"a method's settings may not be named like a trial's record: {', '.join(sorted(clash))}")

    @classmethod
    def of(cls, trial: FrozenTrial | optuna.trial.BaseTrial) -> TrialRecord:
        attrs = trial.user_attrs
        settings = {key: value for key, value in attrs.items() if key not in _KEYS}
        return cls(**{key: attrs[key] for key in _KEYS if key in attrs}, settings=settings)

    def attrs(self) -> dict[str, Any]:
        """The user attributes this record sets (for an enqueued trial, or a trial in storage)."""
        return _set_fields(self) | dict(self.settings)

    def write(self, trial: optuna.trial.BaseTrial) -> None:
        for key, value in self.attrs().items():
            trial.set_user_attr(key, value)

    @classmethod
    def result_of(cls, source: object, **more: Any) -> TrialRecord:
        """A network's result as `source` holds it (a training outcome, or the record of the
        trial that trained it), with `more` fields."""
        return cls(**{name: getattr(source, name) for name in RESULT_FIELDS}, **more)

    @property
    def trained(self) -> bool:
        """Whether the trial holds a network's result (trained here, or reused)."""
        return self.gflops is not None


_KEYS = frozenset(f.name for f in fields(TrialRecord)) - {"settings"}
RESULT_FIELDS = ("gflops", "params", "val_auc", "val_auc_std", "test_auc", "test_auc_std", "latency_ms")


@dataclass(frozen=True)
class StudyRecord:
    """What the study itself records, beside its trials."""

    config: dict[str, Any] | None = None  # the study file's settings, passwords masked
    mlflow_parent_run_id: str | None = None
    pareto_trials: list[str] | None = None  # the MLflow runs of the trials on the front
    base_network: str | None = None  # the folder of the network the baseline trained, once trained
    base_sha256: str | None = None  # of its weights: every worker checks the copy it loads
    base_run_id: str | None = None  # the baseline's MLflow run, where a worker without the folder fetches it
    confirm_seeds: int | None = None  # the seeds a front point is confirmed over, once confirmation ran
    runner: dict[str, Any] | None = None  # the process that last set the parent run RUNNING (`recovery.this_worker`)
    creator: dict[str, Any] | None = None  # the process that made the study: it makes the parent run too

    @classmethod
    def of(cls, study: optuna.Study) -> StudyRecord:
        attrs = study.user_attrs
        return cls(**{f.name: attrs[f.name] for f in fields(cls) if f.name in attrs})

    def write(self, study: optuna.Study) -> None:
        for key, value in _set_fields(self).items():
            study.set_user_attr(key, value)


CONFIRMATION_PREFIX = "confirmation."


@dataclass(frozen=True)
class SeedRecord:
    """One more seed of a front point, trained when the study is confirmed: a study attribute
    `confirmation.<trial>.<seed>`, written when it starts (its worker and run) and again with
    its figures, so that a seed is trained once and one whose worker died is known."""

    trial: int
    seed: int
    worker: dict[str, Any] | None = None
    mlflow_run_id: str | None = None
    val_auc: float | None = None
    test_auc: float | None = None
    gflops: float | None = None
    epochs: int | None = None
    seconds: float | None = None

    @property
    def key(self) -> str:
        return f"{CONFIRMATION_PREFIX}{self.trial}.{self.seed}"

    @property
    def done(self) -> bool:
        return self.val_auc is not None

    @classmethod
    def all_of(cls, study: optuna.Study) -> list[SeedRecord]:
        attrs = study.user_attrs
        return [cls(**value) for key, value in sorted(attrs.items()) if key.startswith(CONFIRMATION_PREFIX)]

    def write(self, study: optuna.Study) -> None:
        study.set_user_attr(self.key, _set_fields(self))
