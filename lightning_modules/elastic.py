"""Training an elastic network once (BigNAS's sandwich rule), and judging any of its slices
without training: its norms' statistics measured again on training patches, then its val AUC."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torchmetrics.classification import BinaryAUROC

from nar_search.lightning_modules.datamodule import PatchDataModule
from nar_search.lightning_modules.distillation import distillation_loss
from nar_search.models.cost import spec_cost
from nar_search.models.elastic import ElasticNetwork
from nar_search.models.spec import ArchSpec

# A network of the searched space, drawn at random.
Draw = Callable[[random.Random], ArchSpec]


class SandwichTraining(pl.LightningModule):
    """Every step trains, on one batch at the base's side: the base's own architecture, the
    space's smallest network and `sampled` networks drawn from the space, each at its input side
    (the batch resized), each learning from the labels and from the frozen trained base's logits
    (in-place distillation from the base). Their gradients add up in the shared weights, one
    backward pass at a time. Val AUC is the base architecture's and the smallest's. `compute`
    counts what training cost: GFLOPs of each network trained, times the patches it saw (the
    teacher's forward passes at a third, as a forward pass is a third of a training step)."""

    def __init__(
        self,
        elastic: ElasticNetwork,
        teacher: nn.Module,
        smallest: ArchSpec,
        draw: Draw,
        *,
        sampled: int = 2,
        lr: float = 5e-4,
        weight_decay: float = 5e-4,
        distill_weight: float = 0.5,
        distill_temperature: float = 2.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False  # one backward per network of the sandwich, then one step
        self.elastic, self.teacher = elastic, teacher.eval().requires_grad_(False)
        self.smallest, self.draw, self.sampled = smallest, draw, sampled
        self.lr, self.weight_decay = lr, weight_decay
        self.distill_weight, self.distill_temperature = distill_weight, distill_temperature
        self.random = random.Random(seed)
        self.val_auc, self.val_auc_smallest = BinaryAUROC(), BinaryAUROC()
        self.compute = 0.0
        self._gflops: dict[ArchSpec, float] = {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What a resumed training needs beyond the weights: the draws to come and the compute so far.
        checkpoint["sandwich"] = {"random": list(self.random.getstate()[1]), "position": self.random.getstate()[2], "compute": self.compute}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint["sandwich"]
        self.random.setstate((3, tuple(saved["random"]), saved["position"]))
        self.compute = saved["compute"]

    def on_train_epoch_start(self) -> None:
        # Lightning keeps a module's mode as it finds it, and a base is often built in eval mode:
        # every network of the sandwich trains on its batches' statistics.
        self.elastic.train()

    def sandwich(self) -> list[ArchSpec]:
        return [self.elastic.base_spec, self.smallest, *(self.draw(self.random) for _ in range(self.sampled))]

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        images, labels = batch[0], batch[1]
        optimizer = cast(torch.optim.Optimizer, self.optimizers())
        optimizer.zero_grad()
        with torch.no_grad():
            teacher = self.teacher(images)
        losses = []
        specs = self.sandwich()
        for spec in specs:
            logits = self.elastic(_at_side(images, spec.input_size), spec)
            loss = distillation_loss(logits, teacher, labels, self.distill_weight, self.distill_temperature)
            self.manual_backward(loss)
            losses.append(loss.detach())
        optimizer.step()
        # A forward pass is a third of a training step's work: the teacher's counts a third.
        self.compute += len(labels) * (sum(self._cost(spec) for spec in specs) + self._cost(self.elastic.base_spec) / 3)
        self.log("train_loss", torch.stack(losses).mean(), on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        for spec, auc in ((self.elastic.base_spec, self.val_auc), (self.smallest, self.val_auc_smallest)):
            auc.update(self.elastic(_at_side(images, spec.input_size), spec).softmax(dim=1)[:, 1], labels)
        self.log("val_auc", self.val_auc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log("val_auc_smallest", self.val_auc_smallest, on_step=False, on_epoch=True, batch_size=len(labels))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.elastic.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def _cost(self, spec: ArchSpec) -> float:
        if spec not in self._gflops:
            self._gflops[spec] = spec_cost(spec).gflops
        return self._gflops[spec]


def _at_side(images: torch.Tensor, side: int) -> torch.Tensor:
    if images.shape[-1] == side:
        return images
    return F.interpolate(images, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


@torch.no_grad()
def recalibrate_norms(network: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Every batch norm's running mean and variance measured again, as plain averages over
    `batches` (a slice inherits statistics that the base's wider layers gathered)."""
    norms = [module for module in network.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
    network.train()
    for images in batches:
        network(images)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    network.eval()


@torch.no_grad()
def auc_of(network: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The network's AUC (class 1 positive) over labelled batches, in eval mode."""
    network.eval()
    auc = BinaryAUROC()
    for images, labels in batches:
        auc.update(network(images).softmax(dim=1)[:, 1].cpu(), labels.cpu())
    return float(auc.compute())


def sliced_val_auc(elastic: ElasticNetwork, spec: ArchSpec, datamodule: PatchDataModule, calibration_patches: int = 256) -> float:
    """`spec`'s slice judged with no training: taken out of the shared weights, its norms
    measured again on `calibration_patches` shuffled training patches, its val AUC; `datamodule`
    serves patches at `spec`'s input side (set up)."""
    network = elastic.extract(spec)
    device = next(network.parameters()).device
    batches = math.ceil(calibration_patches / datamodule.batch_size)
    recalibrate_norms(network, (batch[0].to(device) for batch in itertools.islice(datamodule.train_dataloader(), batches)))
    return auc_of(network, ((batch[0].to(device), batch[1].to(device)) for batch in datamodule.val_dataloader()))


def train_elastic(module: SandwichTraining, datamodule: PatchDataModule, epochs: int, run_dir: Path, accelerator: str = "auto") -> None:
    """Trains `module` for `epochs`, its state kept in `run_dir`/last.ckpt after every epoch: a
    training stopped in any way goes on from its last finished epoch when run again there."""
    last = run_dir / "last.ckpt"
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        logger=False,
        callbacks=[ModelCheckpoint(dirpath=run_dir, filename="last", enable_version_counter=False)],  # each epoch over the last
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=last if last.is_file() else None)
