"""One candidate network trained and recorded as one MLflow run: what `nar train` does,
and what every study trial does as a child run of its study."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from rich.markup import escape

from nar_search.data.fractions import TEST_FRACTION, VAL_FRACTION
from nar_search.data.sources import SourceOptions
from nar_search.data.splits import Finding
from nar_search.lightning_modules.classifier import PatchClassifier
from nar_search.lightning_modules.datamodule import PatchDataModule
from nar_search.lightning_modules.distillation import TeacherTargets
from nar_search.lightning_modules.settings import TrainingConfig
from nar_search.lightning_modules.training import TrainingResult, evaluate_base, train_spec
from nar_search.models.base_network import BaseNetwork
from nar_search.models.cost import measure_latency, spec_cost
from nar_search.models.spec import ArchSpec
from nar_search.models.weights import save_network
from nar_search.search.cli.console import errors
from nar_search.search.datasets import CONTEXTS, split_datasets
from nar_search.search.front.plots import roc_png
from nar_search.search.tracking import Tracker

DATA_WARNINGS_TAG = "nar.data_warnings"


@dataclass(frozen=True)
class DataSettings:
    source: Path
    mpp: float | None = None
    val_fraction: float = VAL_FRACTION
    test_fraction: float = TEST_FRACTION
    positive: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    slide_pattern: str | None = None
    # The seed that fixes the split (and the order of training patches); by default the training's
    # first seed. One more seed of a trained candidate keeps the split its other seeds had.
    split_seed: int | None = None

    @property
    def source_options(self) -> SourceOptions:
        return SourceOptions(mpp=self.mpp, positive=self.positive, exclude=self.exclude, slide_pattern=self.slide_pattern)

    def params(self) -> dict[str, Any]:
        """What a run records of its data."""
        return asdict(self) | {"source": str(self.source)}

    def datamodule(self, input_size: int, config: TrainingConfig) -> PatchDataModule:
        return PatchDataModule(
            str(self.source),
            input_size=input_size,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
            seed=config.seed if self.split_seed is None else self.split_seed,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            source_options=self.source_options,
        )


@dataclass(frozen=True)
class CandidateOutcome:
    run_id: str
    spec: ArchSpec
    gflops: float
    params: int
    val_auc: float
    val_auc_std: float
    test_auc: float
    test_auc_std: float
    latency_ms: float
    seconds: float
    epochs: int  # trained, summed over seeds (0 for a base that was only evaluated)


def run_params(spec: ArchSpec, config: TrainingConfig, data: DataSettings) -> dict[str, Any]:
    """What a run records of its network, its training and its data (init `base`: the given
    base network, evaluated as it is)."""
    reduction = asdict(spec.reduction)
    shape = {k: v for k, v in spec.to_dict().items() if k not in {"reduction", "model_name", "family"}}
    return {
        "model": spec.model_name,
        "family": spec.family,
        **reduction,
        **shape,
        "init": config.init,
        "distill": asdict(config.distill) if config.distill else "none",
        "train": asdict(config),
        "data": data.params(),
    }


def train_and_record(
    tracker: Tracker,
    experiment: str,
    run_name: str,
    spec: ArchSpec,
    data: DataSettings,
    config: TrainingConfig,
    run_dir: Path,
    *,
    callbacks: Sequence[Callback] = (),
    base: BaseNetwork | None = None,
    progress: bool = True,
    finalize: Callable[[PatchClassifier], PatchClassifier] | None = None,
    params: Mapping[str, Any] | None = None,
) -> CandidateOutcome:
    """`nar train`: `spec` trained in a run of its own (see `train_in_run`)."""
    with tracker.run(experiment, run_name) as run_id:
        return train_in_run(
            tracker,
            run_id,
            spec,
            data,
            config,
            run_dir,
            callbacks=callbacks,
            base=base,
            progress=progress,
            finalize=finalize,
            params=params,
        )


def train_in_run(
    tracker: Tracker,
    run_id: str,
    spec: ArchSpec,
    data: DataSettings,
    config: TrainingConfig,
    run_dir: Path,
    *,
    callbacks: Sequence[Callback] = (),
    base: BaseNetwork | None = None,
    teacher: TeacherTargets | None = None,
    progress: bool = True,
    finalize: Callable[[PatchClassifier], PatchClassifier] | None = None,
    params: Mapping[str, Any] | None = None,
) -> CandidateOutcome:
    """Trains `spec` over `config.seeds` seeds and records params, metrics and artifacts in
    the open run `run_id`. A method's `TrainingHooks` give `spec`, its `callbacks` and
    `finalize` (e.g. ResRep's pruning, and its conversion to the thinner network that is
    evaluated and recorded). `base` is the trained original network that `config.init` and
    `config.distill` start from and learn from. `params`: what the run records beside its
    network, training and data (the method's settings)."""

    def curves(seed: int, epoch: int, metrics: dict[str, float]) -> None:
        # As each epoch ends, at the step of the epochs trained (as rung_val_auc): a long trial is
        # watched live, and one stopped midway keeps its curves.
        tracker.log_metric_series(run_id, [(f"{name}/seed{seed}", value, epoch) for name, value in metrics.items()])

    def train(datamodule: PatchDataModule) -> TrainingResult:
        return train_spec(spec, datamodule, config, run_dir, callbacks, base, progress, finalize, teacher, curves)

    return _record(tracker, run_id, spec, data, config, run_dir, train, params)


def evaluate_in_run(
    tracker: Tracker,
    run_id: str,
    base: BaseNetwork,
    data: DataSettings,
    config: TrainingConfig,
    run_dir: Path,
    *,
    progress: bool = True,
    params: Mapping[str, Any] | None = None,
) -> CandidateOutcome:
    """The given base network evaluated, not trained, and recorded in the open run `run_id` like any other."""

    def evaluate(datamodule: PatchDataModule) -> TrainingResult:
        return evaluate_base(base, datamodule, config, run_dir, progress)

    evaluated = replace(config, epochs=0, init="base", distill=None)
    return _record(tracker, run_id, base.spec, data, evaluated, run_dir, evaluate, params)


def _record(
    tracker: Tracker,
    run_id: str,
    spec: ArchSpec,
    data: DataSettings,
    config: TrainingConfig,
    run_dir: Path,
    obtain: Callable[[PatchDataModule], TrainingResult],
    params: Mapping[str, Any] | None,
) -> CandidateOutcome:
    tracker.log_params(run_id, run_params(spec, config, data) | dict(params or {}))
    datamodule = data.datamodule(spec.input_size, config)
    datamodule.setup()
    _warn_of_data_findings(tracker, run_id, data.source, datamodule.findings())
    datasets = split_datasets(data.source, datamodule)
    tracker.log_datasets(run_id, {CONTEXTS[split]: dataset for split, dataset in datasets.items()})
    tracker.log_files(run_id, {"splits.json": json.dumps(datamodule.slides_by_split(), indent=2)})
    result = obtain(datamodule)
    trained = result.best.classifier.spec  # ResRep's is the converted, thinner network
    cost = spec_cost(trained)
    # A quick probe, not a benchmark: `nar reduce --latency` and bench/ measure properly.
    latency = measure_latency(result.best.classifier.model, trained.input_size, batch_size=8, warmup=1, repeats=3)
    (val_auc, val_std), (test_auc, test_std) = result.val_auc, result.test_auc
    epochs = sum(run.epochs for run in result.runs)
    model_id = _log_network(tracker, run_id, result, run_dir, cost.gflops)
    for aucs, dataset in (
        ({"val_auc": val_auc, "val_auc_std": val_std}, datasets["val"]),
        ({"test_auc": test_auc, "test_auc_std": test_std}, datasets["test"]),
    ):
        tracker.log_metric_series(run_id, [(name, value, 0) for name, value in aucs.items()], model_id, dataset)
    figures = {
        "gflops": cost.gflops,
        "params": cost.params,
        "latency_ms_per_patch": latency.ms_per_patch,
        "throughput_patches_per_s": latency.throughput,
        "train_seconds": result.seconds,
        "epochs_trained": epochs,
    }
    tracker.log_metric_series(run_id, [(name, float(value), 0) for name, value in figures.items()], model_id)
    return CandidateOutcome(
        run_id=run_id,
        spec=trained,
        gflops=cost.gflops,
        params=cost.params,
        val_auc=val_auc,
        val_auc_std=val_std,
        test_auc=test_auc,
        test_auc_std=test_std,
        latency_ms=latency.ms_per_patch,
        seconds=result.seconds,
        epochs=epochs,
    )


def _warn_of_data_findings(tracker: Tracker, run_id: str, source: Path, findings: Sequence[Finding]) -> None:
    """One line before training, and a tag that stays with the run's AUCs."""
    if not findings:
        return
    reasons = "; ".join(finding.reason for finding in findings)
    tracker.set_tags(run_id, {DATA_WARNINGS_TAG: reasons})
    errors.print(
        f"[bold yellow]warning:[/] {escape(str(source))}: {escape(reasons)}: the AUCs may mislead; "
        f"`nar data inspect {escape(str(source))}` shows the splits and what to fix",
        highlight=False,
        soft_wrap=True,
    )


def _log_network(tracker: Tracker, run_id: str, result: TrainingResult, run_dir: Path, gflops: float) -> str:
    """The best seed's network as the run's LoggedModel, its ROC and every seed's AUCs as the
    run's artifacts; returns the model's id."""
    best = result.best
    spec = best.classifier.spec
    # spec.json + model.safetensors: the run folder is a network a study can take as its base.
    save_network(best.classifier.model, spec, run_dir)
    model_id = tracker.log_network(run_id, run_dir, {"model": spec.model_name, "input_size": spec.input_size, "gflops": f"{gflops:.4g}"})
    scores, labels = best.classifier.test_predictions()
    per_seed = [{"seed": r.seed, "val_auc": r.val_auc, "test_auc": r.test_auc, "epochs": r.epochs} for r in result.runs]
    tracker.log_files(
        run_id,
        {
            "spec.json": spec.to_json(),
            "roc_test.png": roc_png(scores.numpy(), labels.numpy(), f"{spec.model_name} · test split (seed {best.seed})"),
            "seeds.json": json.dumps(per_seed, indent=2),
        },
    )
    return model_id
