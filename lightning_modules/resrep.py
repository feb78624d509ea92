"""ResRep during training: the gradient rule every step, the mask schedule every
`mask_interval` steps after warm-up, and the conversion of the trained classifier."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch.optim import Optimizer

from nar_search.lightning_modules.classifier import PatchClassifier
from nar_search.lightning_modules.errors import TrainingError
from nar_search.lightning_modules.settings import RESREP_MASK_INTERVAL, RESREP_MAX_NEW, RESREP_WARMUP_EPOCHS
from nar_search.models.resrep import (
    LASSO_STRENGTH,
    ResRepSpec,
    WidthCost,
    compactors,
    convert,
    insert_compactors,
    reset_gradients,
    update_masks,
)


class ResRepCallback(Callback):
    """Trains a PatchClassifier the ResRep way, towards `flops_target` × its original FLOPs.

    Compactors are inserted at setup unless the model has them already (before the optimiser
    is made, so it trains them). The gradient rule runs in `on_before_optimizer_step`, where
    gradients are whole (after accumulation) and unscaled (after mixed precision's scaler)."""

    def __init__(
        self,
        flops_target: float,
        lasso_strength: float = LASSO_STRENGTH,
        mask_interval: int = RESREP_MASK_INTERVAL,
        warmup_epochs: int = RESREP_WARMUP_EPOCHS,
        max_new: int = RESREP_MAX_NEW,
    ) -> None:
        self.flops_target = flops_target
        self.lasso_strength = lasso_strength
        self.mask_interval = mask_interval
        self.warmup_epochs = warmup_epochs
        self.max_new = max_new
        self.cost: WidthCost | None = None

    # Lightning types its hooks for any LightningModule; this callback is given PatchClassifiers only.
    def setup(self, trainer: pl.Trainer, pl_module: PatchClassifier, stage: str) -> None:  # type: ignore[override]
        if stage != "fit":
            return
        if not compactors(pl_module.model):
            insert_compactors(pl_module.model, pl_module.spec.input_size)
        self.cost = WidthCost.of(pl_module.model, pl_module.spec.input_size)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: PatchClassifier) -> None:  # type: ignore[override]
        decayed = {
            id(param)
            for optimizer in trainer.optimizers
            for group in optimizer.param_groups
            if group.get("weight_decay")
            for param in group["params"]
        }
        if decayed & {id(compactor.weight) for compactor in compactors(pl_module.model)}:
            raise TrainingError(
                "ResRep's compactors must get no weight decay: build the optimiser from nar_search.models.resrep.param_groups"
            )

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: PatchClassifier, optimizer: Optimizer) -> None:  # type: ignore[override]
        if trainer.current_epoch >= self.warmup_epochs and trainer.global_step % self.mask_interval == 0:
            assert self.cost is not None  # set by setup("fit")
            fraction = update_masks(pl_module.model, self.flops_target, self.max_new, cost=self.cost)
            pl_module.log("resrep_flops", fraction, on_step=True, on_epoch=False)
        reset_gradients(pl_module.model, self.lasso_strength)


def converted_classifier(classifier: PatchClassifier, flops_target: float, drop_masked: bool = True) -> PatchClassifier:
    """The trained classifier as a plain thinner network of spec `ResRepSpec` (same outputs in eval
    mode unless masked rows that have not decayed are dropped); its weights load strictly into
    the rebuilt spec, which is checked here."""
    model, widths = convert(classifier.model, classifier.spec.input_size, drop_masked)
    spec = ResRepSpec.of(classifier.spec, widths, flops_target)
    hparams: dict[str, Any] = {**classifier.hparams, "spec": spec.to_dict()}
    thinner = PatchClassifier(**hparams)
    thinner.model.load_state_dict(model.state_dict())
    return thinner.train(classifier.training)


def resrep_training(
    flops_target: float,
    mask_interval: int = RESREP_MASK_INTERVAL,
    warmup_epochs: int = RESREP_WARMUP_EPOCHS,
    lasso_strength: float = LASSO_STRENGTH,
    max_new: int = RESREP_MAX_NEW,
) -> tuple[list[Callback], Callable[[PatchClassifier], PatchClassifier]]:
    """The callbacks and the end-of-training conversion that make `train_spec` run ResRep."""
    callback = ResRepCallback(flops_target, lasso_strength, mask_interval, warmup_epochs, max_new)
    return [callback], partial(converted_classifier, flops_target=flops_target)
