"""Patches for training and evaluating a classifier: slide-grouped splits, resizing to the
network's input side, ImageNet normalisation and augmentation of training patches only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from nar_search.data.fractions import TEST_FRACTION, VAL_FRACTION
from nar_search.data.sources import PATCH_MEAN, PATCH_STD, PatchDataset, SourceOptions, open_patch_source
from nar_search.data.splits import Finding, SplitSummary, check_splits, split_findings, split_patches, summarise_splits
from nar_search.lightning_modules.settings import TrainingConfig


def eval_transform(input_size: int, mean: tuple[float, ...] = PATCH_MEAN, std: tuple[float, ...] = PATCH_STD) -> v2.Compose:
    """uint8 C × H × W patch -> normalised float input_size × input_size."""
    return v2.Compose(
        [
            v2.Resize((input_size, input_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


def train_transform(input_size: int, mean: tuple[float, ...] = PATCH_MEAN, std: tuple[float, ...] = PATCH_STD) -> v2.Compose:
    """eval_transform plus what does not change a patch's label: any of the 8 flips and
    quarter turns, and mild stain (colour) variation."""
    return v2.Compose(
        [
            v2.Resize((input_size, input_size), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomApply([v2.RandomRotation((90, 90))]),
            v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


# An image and its label, and its soft target when there are some.
PatchItem = tuple[torch.Tensor, int] | tuple[torch.Tensor, int, torch.Tensor]


class TransformedSubset(Dataset[PatchItem]):
    """Some patches of a dataset, with a transform applied to the images, and with each
    patch's soft target (a teacher's logits) when given."""

    def __init__(
        self,
        dataset: PatchDataset,
        indices: np.ndarray,
        transform: Callable[[torch.Tensor], torch.Tensor],
        soft_targets: torch.Tensor | None = None,
    ) -> None:
        self.dataset, self.indices, self.transform, self.soft_targets = dataset, indices, transform, soft_targets

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> PatchItem:
        image, label = self.dataset[int(self.indices[index])]
        if self.soft_targets is None:
            return self.transform(image), label
        return self.transform(image), label, self.soft_targets[index]


class PatchDataModule(pl.LightningDataModule):
    """Train / val / test patches from any source `open_patch_source` reads.

    Splits keep each slide in one split (fixed by `seed`); val and test must hold both classes
    so that their AUC is defined, and `findings` says what else makes their AUCs doubtful.
    predict_dataloader covers every patch of the source, in order.
    """

    mean: tuple[float, ...] = PATCH_MEAN
    std: tuple[float, ...] = PATCH_STD

    def __init__(
        self,
        source: str | Path,
        input_size: int,
        batch_size: int = TrainingConfig.batch_size,
        num_workers: int = TrainingConfig.num_workers,
        seed: int = TrainingConfig.seed,
        val_fraction: float = VAL_FRACTION,
        test_fraction: float = TEST_FRACTION,
        augment: bool = True,
        source_options: SourceOptions = SourceOptions(),
    ) -> None:
        super().__init__()
        # Checkpoints load with weights_only: plain values only, so the options as a dict.
        self.save_hyperparameters(ignore=["source", "source_options"])
        self.hparams.update(source=str(source), source_options=asdict(source_options))
        self.source, self.input_size, self.batch_size = source, input_size, batch_size
        self.num_workers, self.seed = num_workers, seed
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self.augment = augment
        self.source_options = source_options
        self.dataset: PatchDataset | None = None
        self.splits: dict[str, np.ndarray] = {}
        # A teacher's logits per training patch, in split order (set by distillation).
        self.soft_targets: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        # Patches read from slides are read straight at the network's side.
        dataset = open_patch_source(self.source, self.source_options, patch_side=self.input_size)
        splits = split_patches(dataset, self.fractions["val"], self.fractions["test"], self.seed)
        check_splits(summarise_splits(dataset, splits), self.fractions)
        self.dataset, self.splits = dataset, splits

    def summary(self) -> list[SplitSummary]:
        """Patches per class and slides in each split (after setup)."""
        return summarise_splits(self._dataset, self.splits)

    def findings(self) -> list[Finding]:
        """What makes the splits' AUCs doubtful: scarce classes, patches or slides in two splits (after setup)."""
        return split_findings(self._dataset, self.splits)

    def slides_by_split(self) -> dict[str, list[str]]:
        """Which slides went to which split (after setup; empty lists when the source names no slides)."""
        slides = np.array(self._dataset.slides or [])
        return {name: sorted(set(slides[indices].tolist())) if len(slides) else [] for name, indices in self.splits.items()}

    @property
    def _dataset(self) -> PatchDataset:
        if self.dataset is None:
            raise RuntimeError("call setup() first")
        return self.dataset

    @property
    def num_train(self) -> int:
        return len(self.splits["train"])

    @property
    def num_val(self) -> int:
        return len(self.splits["val"])

    @property
    def num_test(self) -> int:
        return len(self.splits["test"])

    def train_key(self) -> tuple[str, SourceOptions, bytes]:
        """Equal for data modules whose training split holds the same patches in the same order."""
        return (str(self.source), self.source_options, self.splits["train"].tobytes())

    def train_patches_at(self, input_size: int, batch_size: int) -> DataLoader[PatchItem]:
        """The training split in order, un-augmented, at another input side (a teacher's)."""
        # Opened anew: patches read from slides are read at the side asked for.
        source = open_patch_source(self.source, self.source_options, patch_side=input_size)
        dataset = TransformedSubset(source, self.splits["train"], eval_transform(input_size, self.mean, self.std))
        return DataLoader(dataset, batch_size=batch_size, num_workers=self.num_workers)

    def _loader(self, indices: np.ndarray, train: bool) -> DataLoader[PatchItem]:
        make_transform = train_transform if train and self.augment else eval_transform
        transform = make_transform(self.input_size, self.mean, self.std)
        return DataLoader(
            TransformedSubset(self._dataset, indices, transform, self.soft_targets if train else None),
            batch_size=self.batch_size,
            shuffle=train,
            # A last training batch of one patch is dropped: BatchNorm cannot normalise a batch
            # of one over a 1 × 1 map (a small network's last stage), and one patch is lost.
            drop_last=train and len(indices) % self.batch_size == 1 and len(indices) > 1,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed) if train else None,
        )

    def train_dataloader(self) -> DataLoader[PatchItem]:
        return self._loader(self.splits["train"], train=True)

    def val_dataloader(self) -> DataLoader[PatchItem]:
        return self._loader(self.splits["val"], train=False)

    def test_dataloader(self) -> DataLoader[PatchItem]:
        return self._loader(self.splits["test"], train=False)

    def predict_dataloader(self) -> DataLoader[PatchItem]:
        return self._loader(np.arange(len(self._dataset)), train=False)
