"""The binary TIL classifier: a reduced network from its spec, its loss, optimiser and AUC."""

from __future__ import annotations

from typing import Any, cast

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics.classification import BinaryAUROC

from nar_search.lightning_modules.distillation import distillation_loss
from nar_search.lightning_modules.errors import TrainingError
from nar_search.lightning_modules.settings import Scheduler, TrainingConfig
from nar_search.models.resrep import param_groups
from nar_search.models.spec import spec_from_dict


class PatchClassifier(pl.LightningModule):
    """Trains `spec` as a 2-class patch classifier; class 1 is TIL-positive.

    Adam, at `TrainingConfig`'s learning rate and weight decay by default. `step` is the
    paper's ResRep schedule (StepLR, step 5, γ 0.5); `cosine` anneals over `max_epochs`.
    Training batches that carry a teacher's logits (image, label, logits) are learnt with
    `distill_weight` of the distillation loss at `distill_temperature`.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        lr: float = TrainingConfig.lr,
        weight_decay: float = TrainingConfig.weight_decay,
        scheduler: Scheduler = TrainingConfig.scheduler,
        step_size: int = 5,
        step_gamma: float = 0.5,
        max_epochs: int = TrainingConfig.epochs,
        distill_weight: float = 0.0,
        distill_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = spec_from_dict(spec)
        self.model = self.spec.build()
        self.train_auc, self.val_auc, self.test_auc = BinaryAUROC(), BinaryAUROC(), BinaryAUROC()
        self._test_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.model(images))

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str, auc: BinaryAUROC) -> torch.Tensor:
        images, labels, *teacher = batch
        logits = self(images)
        if teacher:
            loss = distillation_loss(logits, teacher[0], labels, self.hparams["distill_weight"], self.hparams["distill_temperature"])
        else:
            loss = nn.functional.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"{stage} loss is {loss.item()} at epoch {self.current_epoch}: lower the learning rate "
                f"(now {self.hparams['lr']}) or check the input patches for NaNs"
            )
        scores = logits.softmax(dim=1)[:, 1]
        auc.update(scores, labels)
        if stage == "test":
            self._test_outputs.append((scores.detach().cpu(), labels.cpu()))
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test", batch_size=len(labels))
        self.log(f"{stage}_auc", auc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_auc)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val", self.val_auc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test", self.test_auc)

    def on_test_epoch_start(self) -> None:
        self._test_outputs = []

    def test_predictions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """TIL-positive probabilities and labels of the last test epoch (for ROC curves)."""
        scores, labels = zip(*self._test_outputs)
        return torch.cat(scores), torch.cat(labels)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return cast(torch.Tensor, self(images)).softmax(dim=1)[:, 1]

    def configure_optimizers(self) -> Any:
        # ResRep's compactors, if any, are shrunk by their Lasso alone: no weight decay for them.
        groups = param_groups(self.model, self.hparams["weight_decay"])
        optimizer = torch.optim.Adam(groups, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"])
        scheduler: torch.optim.lr_scheduler.LRScheduler
        if self.hparams["scheduler"] == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, self.hparams["step_size"], self.hparams["step_gamma"])
        elif self.hparams["scheduler"] == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.hparams["max_epochs"]))
        else:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
