"""Train / validation / test splits that keep every slide in one split, fixed by a seed; the
checks that refuse splits or doubt their AUCs; tables of patches per split and per slide."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import cast

import numpy as np
from rich.markup import escape
from rich.table import Table
from sklearn.model_selection import train_test_split

from nar_search.data.errors import DataError
from nar_search.data.fractions import TEST_FRACTION, VAL_FRACTION
from nar_search.data.sources import CLASS_NAMES, SPLITS, PatchDataset

# Each patch of a class moves an AUC by 1/(patches of that class): more than 0.1 below 10.
MIN_PATCHES_PER_CLASS = 10


def _take(indices: np.ndarray, count: int, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, taken), taking `count` patches stratified by label."""
    if count == 0:
        return indices, indices[:0]
    rest, taken = train_test_split(indices, test_size=count, stratify=labels[indices], random_state=seed)
    return np.sort(rest), np.sort(taken)


# Slide orders drawn, in the seed's order, for a grouped split that holds both classes.
SPLIT_DRAWS = 256


def _split_slides(groups: np.ndarray, labels: np.ndarray, val: int, test: int, seed: int) -> dict[str, np.ndarray]:
    """Whole slides to each split, `val` and `test` of them held out: the first of the seed's
    random slide orders in which every split holds each class as at least half its share of
    the source (and MIN_PATCHES_PER_CLASS patches), else the order that comes closest.

    Slides are often of one class mostly (a tumour's slides, a source image of immune cells),
    so an unchecked draw can leave a split with one class, or one whose AUC rests on a handful
    of patches; taking the first acceptable order, not the most balanced one, keeps each seed's
    split its own."""
    names, slide_of = np.unique(groups, return_inverse=True)
    per_slide = np.zeros((len(names), len(CLASS_NAMES)), int)
    np.add.at(per_slide, (slide_of, labels), 1)
    share = per_slide.sum(0) / per_slide.sum()
    rng = np.random.default_rng(seed)
    best, best_shortfall = None, None
    for _ in range(SPLIT_DRAWS):
        order = rng.permutation(len(names))
        parts = {"train": order[val + test :], "val": order[test : test + val], "test": order[:test]}
        shortfall = _class_shortfall(per_slide, parts, share)
        if best_shortfall is None or shortfall < best_shortfall:
            best, best_shortfall = parts, shortfall
        if shortfall == (0, 0):
            break
    assert best is not None
    return {name: np.flatnonzero(np.isin(slide_of, slides)) for name, slides in best.items()}


def _class_shortfall(per_slide: np.ndarray, parts: Mapping[str, np.ndarray], share: np.ndarray) -> tuple[int, int]:
    """(classes missing from a split, classes under half their share or MIN_PATCHES_PER_CLASS in a split)."""
    missing = scarce = 0
    for slides in parts.values():
        counts = per_slide[slides].sum(0)
        missing += int((counts == 0).sum())
        scarce += int(((counts < MIN_PATCHES_PER_CLASS) | (counts < share * counts.sum() / 2)).sum())
    return missing, scarce


def split_patches(
    dataset: PatchDataset, val_fraction: float = VAL_FRACTION, test_fraction: float = TEST_FRACTION, seed: int = 0
) -> dict[str, np.ndarray]:
    """Indices of the train, val and test patches.

    A source that fixes its splits keeps them. Otherwise whole slides go to one split (the
    fractions count slides), drawn so that every split holds both classes (`_split_slides`);
    a source without slides is split per patch, stratified by class, with a warning (patches
    of one slide in training and evaluation make the AUC optimistic).
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
    if groups is not None:
        return _split_slides(groups, labels, val, test, seed)
    everything = np.arange(len(labels))
    try:
        rest, test_indices = _take(everything, test, labels, seed)
        train_indices, val_indices = _take(rest, val, labels, seed)
    except ValueError as error:  # scikit-learn: a class too small to stratify
        raise DataError(f"{dataset.description}: cannot split into train/val/test ({error}); add patches or change the fractions") from None
    return {"train": train_indices, "val": val_indices, "test": test_indices}


@dataclass(frozen=True)
class SplitSummary:
    name: str
    patches: int
    per_class: tuple[int, ...]  # patches of each class, in CLASS_NAMES order
    slides: int | None  # distinct slides (None when the source names none)


def summarise_splits(dataset: PatchDataset, splits: Mapping[str, np.ndarray]) -> list[SplitSummary]:
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


def summary_table(summaries: Sequence[SplitSummary], title: str = "Patch splits") -> Table:
    table = Table("split", "patches", *CLASS_NAMES, "slides", title=title)
    for split in summaries:
        slides = "-" if split.slides is None else str(split.slides)
        table.add_row(split.name, str(split.patches), *map(str, split.per_class), slides)
    return table


def slide_table(dataset: PatchDataset, splits: Mapping[str, np.ndarray] | None = None) -> Table:
    """Patches of each class per slide (the source must name slides), and the splits holding
    each slide when `splits` are given."""
    names, slide_of = np.unique(np.array(dataset.slides), return_inverse=True)
    per_slide = summarise_splits(dataset, {name: np.flatnonzero(slide_of == i) for i, name in enumerate(names.tolist())})
    held_by = _members(cast(list[str], dataset.slides), splits or {})  # the source must name slides
    table = Table("slide", "patches", *CLASS_NAMES, *(["splits"] if splits else []), title="Slides")
    for slide in per_slide:
        in_splits = [", ".join(name for name, held in held_by.items() if slide.name in held)] if splits else []
        table.add_row(escape(slide.name), str(slide.patches), *map(str, slide.per_class), *in_splits)
    return table


def class_table(dataset: PatchDataset, splits: Mapping[str, np.ndarray]) -> Table:
    """Patches of each class folder in each split (the source must come as class folders)."""
    classes, labels = np.array(dataset.classes), np.array(dataset.labels)
    table = Table("class folder", "label", *splits, title="Class folders")
    for name in dict.fromkeys(dataset.classes or []):
        label = CLASS_NAMES[labels[classes == name][0]]
        table.add_row(escape(name), label, *(str(int((classes[indices] == name).sum())) for indices in splits.values()))
    return table


def check_splits(summaries: Sequence[SplitSummary], fractions: Mapping[str, float]) -> None:
    """Refuses splits a classifier cannot be trained or evaluated on: an empty split whose
    fraction is not 0 (train's is taken as 1), or a split of one class."""
    for split in summaries:
        if split.patches == 0:
            if fractions.get(split.name, 1.0) > 0:
                raise DataError(f"split {split.name} is empty: add patches (or slides) or change the fractions")
            continue
        present = [name for name, count in zip(CLASS_NAMES, split.per_class) if count]
        if len(present) == 1:
            consequence = "training needs both classes" if split.name == "train" else "AUC is undefined"
            raise DataError(
                f"{consequence}: split {split.name} holds only class {present[0]}; add patches of both classes or change the fractions"
            )


@dataclass(frozen=True)
class Finding:
    """A reason to doubt what a split's AUC says: `reason` in a few words (for tags and a
    one-line warning), `message` in full with what to do about it."""

    reason: str
    message: str


def split_findings(dataset: PatchDataset, splits: Mapping[str, np.ndarray]) -> list[Finding]:
    """What makes the splits' AUCs doubtful though they can be trained and evaluated on: a
    class with fewer than MIN_PATCHES_PER_CLASS patches in a split, a patch or a slide in two
    splits (which a manifest's split column allows)."""
    return [*_scarce_classes(summarise_splits(dataset, splits)), *_shared_between_splits(dataset, splits)]


def _scarce_classes(summaries: Sequence[SplitSummary]) -> Iterator[Finding]:
    for split in summaries:
        if split.patches == 0:
            continue  # an empty split is check_splits' concern
        for name, count in zip(CLASS_NAMES, split.per_class):
            if count < MIN_PATCHES_PER_CLASS:
                yield Finding(
                    f"{split.name} has {count} {name}",
                    f"split {split.name} holds {_counted(count, name + ' patch')}, fewer than {MIN_PATCHES_PER_CLASS}: "
                    "too few to learn the class from or to measure an AUC on; add patches of that class or change the fractions",
                )


_SHARED_CONSEQUENCE = {
    "patch": "the AUC is not measured on held-out patches; list each patch in one split",
    "slide": "patches of one slide look alike, so the AUC is optimistic; put all patches of a slide in one split",
}


def _shared_between_splits(dataset: PatchDataset, splits: Mapping[str, np.ndarray]) -> Iterator[Finding]:
    held = {"patch": _members(dataset.identities(), splits)}
    if dataset.slides is not None:
        held["slide"] = _members(dataset.slides, splits)
    for first, second in combinations(splits, 2):
        for kind, members in held.items():
            if shared := members[first] & members[second]:
                yield Finding(
                    f"{first} and {second} share {_counted(len(shared), kind)}",
                    f"splits {first} and {second} share {_counted(len(shared), kind)} (e.g. {min(shared)}): {_SHARED_CONSEQUENCE[kind]}",
                )


def _members(names: Sequence[str], splits: Mapping[str, np.ndarray]) -> dict[str, set[str]]:
    """The distinct names (of patches or slides) in each split."""
    of_patch = np.array(names)
    return {split: set(of_patch[indices].tolist()) for split, indices in splits.items()}


def _counted(count: int, noun: str) -> str:
    """'1 slide', '2 slides', '2 patches'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}{'es' if noun.endswith('ch') else 's'}"
