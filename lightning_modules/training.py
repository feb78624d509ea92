"""Training one candidate network: a Trainer per seed, the best checkpoint by val AUC, test
AUC on the held-out split, and AUC as mean ± std over seeds (the paper averages 3 runs)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from nar_search.lightning_modules.classifier import PatchClassifier
from nar_search.lightning_modules.distill_settings import DistillSettings
from nar_search.lightning_modules.distillation import TeacherTargets
from nar_search.lightning_modules.errors import TrainingError
from nar_search.lightning_modules.progress import EpochProgressBar
from nar_search.lightning_modules.settings import TrainingConfig
from nar_search.models.base_network import BaseNetwork
from nar_search.models.init_modes import get_init_mode
from nar_search.models.spec import ArchSpec

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT


@dataclass
class SeedRun:
    seed: int
    val_auc: float
    test_auc: float
    epochs: int
    seconds: float
    classifier: PatchClassifier = field(repr=False)


@dataclass
class TrainingResult:
    runs: list[SeedRun]

    @property
    def best(self) -> SeedRun:
        return max(self.runs, key=lambda run: run.val_auc)

    def _mean_std(self, values: list[float]) -> tuple[float, float]:
        return statistics.fmean(values), statistics.pstdev(values)

    @property
    def val_auc(self) -> tuple[float, float]:
        return self._mean_std([run.val_auc for run in self.runs])

    @property
    def test_auc(self) -> tuple[float, float]:
        return self._mean_std([run.test_auc for run in self.runs])

    @property
    def seconds(self) -> float:
        return sum(run.seconds for run in self.runs)


# (seed, epochs trained so far, that epoch's train and val loss and AUC) → None
EpochListener = Callable[[int, int, dict[str, float]], None]


class EpochHistory(Callback):
    """Counts the epochs of one fit and hands each epoch's metrics (train and val loss and AUC)
    to `listener` as soon as the epoch ends, so that a fit stopped midway keeps what it did."""

    def __init__(self, seed: int, listener: EpochListener | None = None) -> None:
        self.seed, self.listener = seed, listener
        self.epochs = 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs += 1
        if self.listener is not None:
            self.listener(self.seed, self.epochs, {name: float(value) for name, value in trainer.callback_metrics.items()})


def make_trainer(config: TrainingConfig, run_dir: Path, callbacks: Sequence[Callback] = (), progress: bool = True) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=1,
        precision=cast("_PRECISION_INPUT", config.precision),  # a plain str in TrainingConfig, which imports no Lightning
        deterministic=config.deterministic,
        default_root_dir=run_dir,
        callbacks=[*callbacks, EpochProgressBar()] if progress else list(callbacks),
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def train_spec(
    spec: ArchSpec,
    datamodule: pl.LightningDataModule,
    config: TrainingConfig,
    run_dir: Path,
    callbacks: Sequence[Callback] = (),
    base: BaseNetwork | None = None,
    progress: bool = True,
    finalize: Callable[[PatchClassifier], PatchClassifier] | None = None,
    teacher: TeacherTargets | None = None,
    on_epoch: EpochListener | None = None,
) -> TrainingResult:
    """Trains `spec` once per seed, each fresh model started as `config.init` says (from
    `base`, the trained original network, when inheriting), and distilled from `base` when
    `config.distill` is set (`teacher` may bring its logits, cached across calls).

    Without `finalize` the best checkpoint by val AUC is evaluated. With it, the network that
    `finalize` makes of the final weights is (ResRep: the converted thinner network, whose
    masks reach the FLOPs target only at the end). `on_epoch` hears of every epoch as it ends."""
    init_mode = get_init_mode(config.init)
    teachers: list[Callback] = []
    if config.distill is not None:
        if teacher is None:
            if base is None:
                raise TrainingError("distillation needs a base network as teacher: give one, or train without distill")
            teacher = TeacherTargets(base.build(), base.spec.input_size)
        teachers = [teacher]
    distill = config.distill or DistillSettings(weight=0.0)
    runs = []
    for seed in range(config.seed, config.seed + config.seeds):
        pl.seed_everything(seed, workers=True, verbose=False)
        classifier = PatchClassifier(
            spec.to_dict(),
            lr=config.lr,
            weight_decay=config.weight_decay,
            scheduler=config.scheduler,
            max_epochs=config.epochs,
            distill_weight=distill.weight,
            distill_temperature=distill.temperature,
        )
        init_mode.initialise(classifier.model, spec, base)
        history = EpochHistory(seed, on_epoch)
        best = ModelCheckpoint(dirpath=run_dir / f"seed{seed}", filename="best", monitor="val_auc", mode="max", save_weights_only=True)
        seed_callbacks = [history, best, *callbacks, *teachers]
        if config.patience is not None:
            seed_callbacks.append(EarlyStopping(monitor="val_auc", mode="max", patience=config.patience))
        trainer = make_trainer(config, run_dir, seed_callbacks, progress)
        start = time.perf_counter()
        trainer.fit(classifier, datamodule=datamodule)
        seconds = time.perf_counter() - start
        if finalize is None:
            val_auc: torch.Tensor | float = cast(torch.Tensor, best.best_model_score)  # set by the first validation epoch
            test_auc = trainer.test(classifier, datamodule=datamodule, ckpt_path="best", verbose=False)[0]["test_auc"]
        else:
            classifier = finalize(classifier)
            val_auc = trainer.validate(classifier, datamodule=datamodule, verbose=False)[0]["val_auc"]
            test_auc = trainer.test(classifier, datamodule=datamodule, verbose=False)[0]["test_auc"]
        runs.append(
            SeedRun(
                seed=seed,
                val_auc=float(val_auc),
                test_auc=float(test_auc),
                epochs=history.epochs,
                seconds=seconds,
                classifier=classifier,
            )
        )
    return TrainingResult(runs=runs)


def evaluate_base(
    base: BaseNetwork, datamodule: pl.LightningDataModule, config: TrainingConfig, run_dir: Path, progress: bool = True
) -> TrainingResult:
    """The trained base network evaluated as it is, as a result of zero epochs: the reference
    a study compares its candidates with, without training it again."""
    classifier = PatchClassifier(base.spec.to_dict(), lr=config.lr, weight_decay=config.weight_decay)
    classifier.model.load_state_dict(base.state, strict=True)
    trainer = make_trainer(config, run_dir, [], progress)
    start = time.perf_counter()
    val_auc = trainer.validate(classifier, datamodule=datamodule, verbose=False)[0]["val_auc"]
    test_auc = trainer.test(classifier, datamodule=datamodule, verbose=False)[0]["test_auc"]
    run = SeedRun(
        seed=config.seed,
        val_auc=float(val_auc),
        test_auc=float(test_auc),
        epochs=0,
        seconds=time.perf_counter() - start,
        classifier=classifier,
    )
    return TrainingResult(runs=[run])
