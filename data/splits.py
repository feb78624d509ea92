"""Train / validation / test splits that keep every slide in one split, fixed by a seed."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rich.table import Table
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from data.errors import DataError
from data.sources import CLASS_NAMES, SPLITS, PatchDataset


def _take(
    indices: np.ndarray, count: int, groups: np.ndarray | None, labels: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, taken), taking `count` groups (or patches, stratified by label)."""
    if count == 0:
        return indices, indices[:0]
    if groups is None:
        rest, taken = train_test_split(indices, test_size=count, stratify=labels[indices], random_state=seed)
        return np.sort(rest), np.sort(taken)
    splitter = GroupShuffleSplit(n_splits=1, test_size=count, random_state=seed)
    rest, taken = next(splitter.split(indices, groups=groups[indices]))
    return indices[rest], indices[taken]


def split_patches(
    dataset: PatchDataset, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, np.ndarray]:
    """Indices of the train, val and test patches.

    A source that fixes its splits keeps them. Otherwise whole slides go to one split (the
    fractions count slides); a source without slides is split per patch, stratified by class,
    with a warning (patches of one slide in training and evaluation make the AUC optimistic).
    """
    if dataset.splits is not None:
        names = np.array(dataset.splits)
        return {name: np.flatnonzero(names == name) for name in SPLITS}
    labels = np.array(dataset.labels)
    groups = None if dataset.slides is None else np.array(dataset.slides)
    if groups is None:
        warnings.warn(
            f"{dataset.description} names no slides: splitting per patch, stratified by class; "
            "give slides (label file, manifest slide column) so that no slide leaks across splits",
            stacklevel=2,
        )
    units = len(labels) if groups is None else len(np.unique(groups))
    val, test = (max(1, round(fraction * units)) if fraction > 0 else 0 for fraction in (val_fraction, test_fraction))
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1) or val + test >= units:
        unit = "patches" if groups is None else "slides"
        raise DataError(
            f"{dataset.description} holds {units} {unit}: too few to split into train, val ({val_fraction}) and test "
            f"({test_fraction}); add {unit}, change the fractions or fix the splits in a manifest split column"
        )
    everything = np.arange(len(labels))
    try:
        rest, test_indices = _take(everything, test, groups, labels, seed)
        train_indices, val_indices = _take(rest, val, groups, labels, seed)
    except ValueError as error:  # scikit-learn: a class too small to stratify
        raise DataError(
            f"{dataset.description}: cannot split into train/val/test ({error}); add patches or change the fractions"
        ) from None
    return {"train": train_indices, "val": val_indices, "test": test_indices}


@dataclass(frozen=True)
class SplitSummary:
    name: str
    patches: int
    per_class: tuple[int, ...]  # patches of each class, in CLASS_NAMES order
    slides: int | None  # distinct slides (None when the source names none)


def summarise_splits(dataset: PatchDataset, splits: dict[str, np.ndarray]) -> list[SplitSummary]:
    labels = np.array(dataset.labels)
    slides = None if dataset.slides is None else np.array(dataset.slides)
    return [
        SplitSummary(
            name,
            len(indices),
            tuple(int(count) for count in np.bincount(labels[indices], minlength=len(CLASS_NAMES))),
            None if slides is None else len(np.unique(slides[indices])),
        )
        for name, indices in splits.items()
    ]


def summary_table(summaries: Sequence[SplitSummary]) -> Table:
    table = Table("split", "patches", *CLASS_NAMES, "slides", title="Patch splits")
    for split in summaries:
        slides = "-" if split.slides is None else str(split.slides)
        table.add_row(split.name, str(split.patches), *map(str, split.per_class), slides)
    return table
