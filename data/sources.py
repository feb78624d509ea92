"""Labelled TIL patches from the formats researchers already have.

- a folder with one sub-folder per class: til-negative/ til-positive/ (or 0/ 1/), or any
  class folders with the positive ones named (`positive`) and others left out (`exclude`),
  as public tile sets come (e.g. Kather 2016: 04_LYMPHO against the other tissue classes);
- a folder holding manifest.csv (what `nar data synth-patches` writes);
- the Stony Brook label file: `<patch.png> <label> <slide> <x> <y>` per line;
- a CSV manifest: `path,label[,slide][,split]`;
- whole slides plus a CSV of labelled patch centres: `slide,x,y,label` (level-0 pixels).

Labels are 1 (TIL-positive) and 0 or -1 (TIL-negative); relative paths start at the file
that names them. A source that does not name each patch's slide can take it from the file
names (`slide_pattern`), so that splits keep slides apart. `open_patch_source` tells the
formats apart.
"""

from __future__ import annotations

import csv
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from nar_search.data.errors import DataError
from nar_search.data.slides import SlideHandles, open_slide, read_patch, slide_mpp

PATCH_UM = 50.0
CLASS_NAMES = ("til-negative", "til-positive")
# Patches are normalised with ImageNet's channel statistics (timm's IMAGENET_DEFAULT_MEAN and
# _STD), in training and in prediction alike; here so that prediction needs no Lightning.
PATCH_MEAN = (0.485, 0.456, 0.406)
PATCH_STD = (0.229, 0.224, 0.225)
# The class folders understood without --positive.
CLASS_DIRS: Mapping[str, int] = {"til-negative": 0, "til-positive": 1, "0": 0, "1": 1}
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_LABELS = {"1": 1, "0": 0, "-1": 0}


@dataclass(frozen=True)
class SourceOptions:
    """How to read a patch source beyond what its format says.

    mpp: microns per pixel of slides that do not record it. positive: the class folders whose
    patches are positive (every other folder is then negative); exclude: class folders left
    out. slide_pattern: a regular expression found in each file name that names the patch's
    slide (its first group if it has one). patch_um: the side of patches read from slides.
    """

    mpp: float | None = None
    positive: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    slide_pattern: str | None = None
    patch_um: float = PATCH_UM

    def task(self) -> str | None:
        """The classification task in words, when class folders are named."""
        if not self.positive:
            return None
        left_out = f"; {', '.join(self.exclude)} left out" if self.exclude else ""
        return f"{' + '.join(self.positive)} against every other class folder{left_out}"


class PatchDataset(Dataset[tuple[torch.Tensor, int]], ABC):
    """Labelled patches: items are (uint8 C × H × W tensor, label). `slides` names each patch's
    slide (None when the source does not say) so that splits can keep slides apart; `splits`
    holds splits fixed by the source (None when it fixes none); `classes` the class folder
    each patch came from (None for other sources)."""

    description: str
    labels: list[int]
    slides: list[str] | None
    splits: list[str] | None
    classes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.read(index)).permute(2, 0, 1), self.labels[index]

    @abstractmethod
    def read(self, index: int) -> np.ndarray:
        """Patch `index` as H × W × 3 uint8."""

    @abstractmethod
    def identities(self) -> list[str]:
        """What each patch is, the same wherever the source lists it (so that a patch listed
        twice is found)."""


class ImagePatches(PatchDataset):
    """Patches stored as image files. named_in says where each file was named (for errors)."""

    def __init__(
        self,
        description: str,
        paths: list[Path],
        labels: list[int],
        named_in: list[str],
        slides: list[str] | None = None,
        splits: list[str] | None = None,
        classes: list[str] | None = None,
    ) -> None:
        self.description, self.paths, self.labels, self.named_in = description, paths, labels, named_in
        self.slides, self.splits, self.classes = slides, splits, classes

    def read(self, index: int) -> np.ndarray:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return np.array(image.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise DataError(f"{self.named_in[index]}cannot read image {path} ({error}); replace the file or drop its line") from None

    def identities(self) -> list[str]:
        # Real paths, found once per folder: patches are many, their folders few.
        located = [os.path.split(path) for path in self.paths]
        real = {folder: os.path.realpath(folder) for folder in {folder for folder, _ in located}}
        return [os.path.join(real[folder], name) for folder, name in located]


class SlidePatches(PatchDataset):
    """Square patches of patch_um micrometres read from whole slides around labelled centres,
    resampled to side × side pixels. Each DataLoader worker opens its own slide handles."""

    def __init__(
        self,
        description: str,
        slide_paths: list[Path],
        centres: np.ndarray,
        labels: list[int],
        mpp: Mapping[Path, float],
        patch_um: float = PATCH_UM,
        side: int = 100,
    ) -> None:
        self.description, self.slide_paths, self.centres, self.labels = description, slide_paths, centres, labels
        self.slides, self.splits = [str(path) for path in slide_paths], None
        self.patch_px = {path: round(patch_um / value) for path, value in mpp.items()}
        self.side = side
        self._handles = SlideHandles()

    def read(self, index: int) -> np.ndarray:
        path = self.slide_paths[index]
        size = self.patch_px[path]
        x, y = self.centres[index] - size // 2
        return read_patch(self._handles(path), (int(x), int(y)), size, self.side)

    def identities(self) -> list[str]:
        real = {path: path.resolve() for path in set(self.slide_paths)}
        return [f"{real[path]} at ({x}, {y})" for path, (x, y) in zip(self.slide_paths, self.centres)]


def _label(text: str | None, where: str) -> int:
    value = (text or "").strip()
    if value not in _LABELS:
        raise DataError(f"{where}: label {value!r} is not 1 (TIL-positive) or 0/-1 (TIL-negative)")
    return _LABELS[value]


def _existing(path: Path, where: str) -> Path:
    if not path.is_file():
        raise DataError(f"{where}: patch {path} does not exist; fix the path (relative to the file) or drop the line")
    return path


def _class_folder_labels(root: Path, positive: tuple[str, ...], exclude: tuple[str, ...]) -> dict[str, int]:
    """Class folder name -> label: the conventional names, or the positive folders against every
    other folder not excluded."""
    # Hidden and tool folders (.git, __MACOSX, __pycache__) are no classes.
    present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    for option, names in (("--positive / data.positive", positive), ("--exclude / data.exclude", exclude)):
        if missing := [name for name in names if name not in present]:
            raise DataError(f"{root} has no class folder {missing[0]!r} ({option}); its folders are {', '.join(present) or 'none'}")
    if both := set(positive) & set(exclude):
        raise DataError(f"class folder {min(both)!r} is both --positive and --exclude: keep it in one of them")
    if not positive:
        labels = {name: label for name, label in CLASS_DIRS.items() if name in present and name not in exclude}
        if not labels:
            raise DataError(
                f"{root} has no class folders named {', '.join(CLASS_DIRS)}: name the positive class's folders with "
                "--positive (data.positive in a study file); every other folder is then negative"
            )
        return labels
    labels = {name: int(name in positive) for name in present if name not in exclude}
    if 0 not in labels.values():
        raise DataError(f"{root}: no class folder is left for the negative class; name fewer --positive folders or --exclude fewer")
    return labels


def _slides_from_names(paths: list[Path], pattern: str) -> list[str]:
    try:
        expression = re.compile(pattern)
    except re.error as error:
        raise DataError(f"slide pattern {pattern!r} is not a regular expression ({error}); e.g. 'CRC-Prim-HE-\\d+'") from None
    slides = []
    for path in paths:
        found = expression.search(path.name)
        slide = found and (found.group(1) if expression.groups else found.group(0))
        if not slide:
            raise DataError(
                f"{path}: the slide pattern {pattern!r} (--slide-pattern / data.slide_pattern) finds no slide name in this file name; "
                "give a pattern that every file name holds, whose first group (if any) is never empty"
            )
        slides.append(slide)
    return slides


def read_class_folders(root: Path, positive: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> ImagePatches:
    folders = _class_folder_labels(root, positive, exclude)
    paths, labels, classes = [], [], []
    for name, label in folders.items():
        # Dot-files (macOS's ._x.jpg) are no images.
        images = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not images and name in positive:
            raise DataError(
                f"{root / name} (--positive) holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): name the folder of positive patches"
            )
        paths += images
        labels += [label] * len(images)
        classes += [name] * len(images)
    if not paths:
        raise DataError(f"{root}: the class folders {', '.join(folders)} hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return ImagePatches(f"class folders {root}", paths, labels, named_in=[""] * len(paths), classes=classes)


def read_label_file(path: Path) -> ImagePatches:
    """The Stony Brook label file: `<patch.png> <label> <slide> <x> <y>` per line."""
    paths, labels, slides, named_in = [], [], [], []
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            where = f"{path} line {number}"
            if len(fields) != 5 or not all(_is_number(field) for field in fields[3:]):
                raise DataError(f"{where}: expected '<patch.png> <label> <slide> <x> <y>', got {line.strip()!r}")
            paths.append(_existing(path.parent / fields[0], where))
            labels.append(_label(fields[1], where))
            slides.append(fields[2])
            named_in.append(where + ": ")
    if not paths:
        raise DataError(f"{path} lists no patches")
    return ImagePatches(f"label file {path}", paths, labels, named_in, slides)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs, cells stripped."""
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        rows = [(reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k}) for row in reader]
        return [name.strip() for name in reader.fieldnames or []], rows


def read_manifest(path: Path) -> ImagePatches:
    """A CSV manifest: `path,label[,slide][,split]`."""
    header, rows = _csv_rows(path)
    has_slide, has_split = "slide" in header, "split" in header
    paths, labels, slides, splits, named_in = [], [], [], [], []
    for number, row in rows:
        where = f"{path} line {number}"
        if not row.get("path"):
            raise DataError(f"{where}: the path is empty")
        paths.append(_existing(path.parent / row["path"], where))
        labels.append(_label(row.get("label"), where))
        if has_slide and not row.get("slide"):
            raise DataError(f"{where}: the slide is empty; name the patch's slide or drop the slide column")
        slides.append(row.get("slide", ""))
        if has_split and row.get("split") not in SPLITS:
            raise DataError(f"{where}: split {row.get('split')!r} is not one of {', '.join(SPLITS)}")
        splits.append(row.get("split", ""))
        named_in.append(where + ": ")
    if not paths:
        raise DataError(f"{path} lists no patches")
    return ImagePatches(f"manifest {path}", paths, labels, named_in, slides if has_slide else None, splits if has_split else None)


def read_slide_coordinates(path: Path, mpp: float | None = None, patch_um: float = PATCH_UM, side: int = 100) -> SlidePatches:
    """Whole slides and labelled patch centres: `slide,x,y,label` (level-0 pixels)."""
    _, rows = _csv_rows(path)
    slide_paths, centres, labels = [], [], []
    slide_mpp_of: dict[Path, float] = {}
    dimensions: dict[Path, tuple[int, int]] = {}
    for number, row in rows:
        where = f"{path} line {number}"
        slide_path = path.parent / row.get("slide", "")
        if slide_path not in slide_mpp_of:
            with open_slide(slide_path, named_in=where) as slide:
                slide_mpp_of[slide_path] = slide_mpp(slide, slide_path, mpp)
                dimensions[slide_path] = slide.dimensions
        try:
            x, y = round(float(row["x"])), round(float(row["y"]))
        except (KeyError, ValueError):
            raise DataError(f"{where}: x and y must be numbers (level-0 pixels), got {row.get('x')!r}, {row.get('y')!r}") from None
        width, height = dimensions[slide_path]
        if not (0 <= x < width and 0 <= y < height):
            raise DataError(f"{where}: centre ({x}, {y}) lies outside {slide_path} ({width} x {height} level-0 pixels)")
        slide_paths.append(slide_path)
        centres.append((x, y))
        labels.append(_label(row.get("label"), where))
    if not slide_paths:
        raise DataError(f"{path} lists no patches")
    return SlidePatches(f"slide coordinates {path}", slide_paths, np.array(centres), labels, slide_mpp_of, patch_um, side)


def open_patch_source(path: str | Path, options: SourceOptions = SourceOptions(), *, patch_side: int = 100) -> PatchDataset:
    """The labelled patches at `path`, whatever its format (see the module's docstring), read
    as `options` say; patches read from slides are resampled to patch_side pixels."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; give a folder of class folders, a label file (.txt) or a CSV")
    is_class_folders = path.is_dir() and not (path / "manifest.csv").is_file()
    if (options.positive or options.exclude) and not is_class_folders:
        raise DataError(f"{path} is not a folder of class folders: --positive and --exclude name class folders; leave them out")
    dataset = _open(path, options, patch_side)
    if options.slide_pattern is not None:
        if dataset.slides is not None or not isinstance(dataset, ImagePatches):
            raise DataError(f"{dataset.description} names each patch's slide itself: leave out --slide-pattern")
        dataset.slides = _slides_from_names(dataset.paths, options.slide_pattern)
    return dataset


def _open(path: Path, options: SourceOptions, patch_side: int) -> PatchDataset:
    if path.is_dir():
        manifest = path / "manifest.csv"
        return read_manifest(manifest) if manifest.is_file() else read_class_folders(path, options.positive, options.exclude)
    if path.suffix.lower() == ".txt":
        return read_label_file(path)
    if path.suffix.lower() == ".csv":
        header, _ = _csv_rows(path)
        if {"path", "label"} <= set(header):
            return read_manifest(path)
        if {"slide", "x", "y", "label"} <= set(header):
            return read_slide_coordinates(path, options.mpp, options.patch_um, patch_side)
        raise DataError(
            f"{path} line 1: header {','.join(header)!r} is neither a patch manifest (path,label[,slide][,split]) "
            "nor slide coordinates (slide,x,y,label)"
        )
    raise DataError(f"{path}: unknown format; give a folder of class folders, a label file (.txt) or a CSV")
