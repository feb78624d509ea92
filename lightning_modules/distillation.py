"""Knowledge distillation from the base network (Hinton et al., 2015): the student learns the
teacher's softened class probabilities as well as the labels.

The teacher's logits are computed once per training patch, on the un-augmented patch at the
teacher's own input side, and cached: a reduced student sees another resolution than its
teacher, and a teacher pass per batch would cost more than the student's own step. The
augmentations (flips, quarter turns, mild colour jitter) leave a patch's class unchanged, so
the cached targets stay the teacher's view of the patch."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

from nar_search.data.sources import SourceOptions
from nar_search.lightning_modules.datamodule import PatchDataModule


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, weight: float, temperature: float
) -> torch.Tensor:
    """(1 - weight) · cross-entropy + weight · T² · KL(teacher_T ‖ student_T); T² keeps the soft
    term's gradients on the scale of the hard one's as T grows."""
    hard = F.cross_entropy(student, labels)
    if weight == 0:
        return hard
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - weight) * hard + weight * temperature**2 * soft


class TeacherTargets(Callback):
    """Gives the training split the teacher's logits before the first epoch. One instance
    serves many fits (trials, seeds): the logits of a split are computed once."""

    def __init__(self, teacher: nn.Module, input_size: int, batch_size: int = 64) -> None:
        self.teacher, self.input_size, self.batch_size = teacher.eval(), input_size, batch_size
        self._cache: dict[tuple[str, SourceOptions, bytes], torch.Tensor] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning at run time, undeclared on Trainer
        if stage != "fit" or not isinstance(datamodule, PatchDataModule):
            return
        key = datamodule.train_key()
        if key not in self._cache:
            self._cache[key] = self._logits(datamodule, pl_module.device)
        datamodule.soft_targets = self._cache[key]

    @torch.inference_mode()
    def _logits(self, datamodule: PatchDataModule, device: torch.device) -> torch.Tensor:
        teacher = self.teacher.to(device)
        batches = datamodule.train_patches_at(self.input_size, self.batch_size)
        return torch.cat([teacher(images.to(device)).float().cpu() for images, _ in batches])
