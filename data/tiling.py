"""Tiling a whole slide into patches over its tissue, for prediction.

Tissue is found on a thumbnail the way the established tools do it (HSV saturation, median
blur, threshold, closing, small objects and holes removed); the slide is cut into a grid of
patch_um squares whose centre lies in tissue, and near-blank patches are dropped (Stony
Brook's rule: mean per-channel standard deviation below 12 at 100 px per patch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import openslide
import torch
from rich.progress import track
from skimage.filters import median, threshold_otsu
from skimage.morphology import closing, disk, remove_small_holes, remove_small_objects
from torch.utils.data import Dataset

from nar_search.data.slides import SlideHandles, best_level, on_white, open_slide, read_patch, slide_mpp
from nar_search.data.sources import PATCH_UM

THUMBNAIL_UM = 4.0  # µm per thumbnail pixel, unless that makes it larger than THUMBNAIL_SIDE
THUMBNAIL_SIDE = 2048
# Otsu splits glass from tissue; the bounds keep it sane on all-tissue or all-glass thumbnails.
SATURATION_THRESHOLD_BOUNDS = (8.0, 20.0)  # on 0-255
CLOSING_UM = 8.0
SMALLEST_TISSUE_UM2 = 10_000.0  # pieces (and holes) smaller than 100 × 100 µm are dropped (filled)
BLANK_STD = 12.0
BLANK_CHECK_SIDE = 100  # pixels per patch at which the blank rule was defined (0.5 µm/px)


@dataclass(frozen=True)
class SlideGrid:
    """Where the patches of a slide are: top-left corners in level-0 pixels, row by row."""

    slide: Path
    mpp: float  # µm per level-0 pixel
    patch_px: int  # patch side in level-0 pixels
    coords: np.ndarray  # (N, 2) int64, x, y of each patch's top-left corner
    tissue: np.ndarray  # bool tissue mask over the thumbnail
    tissue_downsample: float  # level-0 pixels per tissue-mask pixel
    thumbnail: np.ndarray  # RGB uint8

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def centres(self) -> np.ndarray:
        return self.coords + self.patch_px // 2


def hsv_saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation of an RGB uint8 image on the 0-255 scale, as uint8: rgb2hsv's, without its
    three float64 planes (hundreds of MB for a 2048² thumbnail)."""
    high, saturation = rgb.max(axis=2) * (1 / 255), rgb.min(axis=2) * (1 / 255)  # as skimage scales
    np.subtract(high, saturation, out=saturation)
    np.divide(saturation, high, out=saturation, where=high > 0)  # black stays 0
    saturation *= 255
    return cast(np.ndarray, saturation.astype(np.uint8))


def detect_tissue(rgb: np.ndarray, pixel_um: float, threshold: float | None = None) -> np.ndarray:
    """Tissue mask of an RGB thumbnail whose pixels are pixel_um wide; threshold on the 0-255
    saturation scale (default: Otsu, bounded)."""
    # skimage's filters and footprints carry no annotations.
    saturation = median(hsv_saturation(rgb), disk(2))  # type: ignore[no-untyped-call]
    if threshold is None:
        threshold = float(np.clip(threshold_otsu(saturation), *SATURATION_THRESHOLD_BOUNDS))  # type: ignore[no-untyped-call]
    tissue = closing(saturation > threshold, disk(max(1, round(CLOSING_UM / pixel_um))))  # type: ignore[no-untyped-call]
    smallest = max(1, round(SMALLEST_TISSUE_UM2 / pixel_um**2))
    tissue = remove_small_objects(tissue, max_size=smallest)
    return cast(np.ndarray, remove_small_holes(tissue, max_size=smallest))


def _drop_blank(slide: openslide.OpenSlide, coords: np.ndarray, patch_px: int) -> np.ndarray:
    """Coordinates of the patches that are not near-blank, read a row of patches at a time."""
    level = best_level(slide, patch_px / BLANK_CHECK_SIDE)
    downsample = slide.level_downsamples[level]
    keep = np.zeros(len(coords), bool)
    rows = np.unique(coords[:, 1])
    for y in track(rows, description="Dropping blank patches", total=len(rows)):
        in_row = np.flatnonzero(coords[:, 1] == y)
        left, right = coords[in_row, 0].min(), coords[in_row, 0].max() + patch_px
        side = round(patch_px / downsample)
        region = slide.read_region((int(left), int(y)), level, (round((right - left) / downsample), side))
        strip = np.asarray(on_white(region))
        for index in in_row:
            start = round((coords[index, 0] - left) / downsample)
            patch = strip[:, start : start + side].astype(np.float32)
            keep[index] = patch.std(axis=(0, 1)).mean() >= BLANK_STD
    return coords[keep]


def tile_slide(path: str | Path, patch_um: float = PATCH_UM, mpp: float | None = None, *, skip_blank: bool = True) -> SlideGrid:
    """The grid of patch_um patches over the tissue of the slide at `path`.

    mpp overrides the slide's microns per pixel (needed when the slide does not record it).
    """
    path = Path(path)
    with open_slide(path) as slide:
        mpp = slide_mpp(slide, path, mpp)
        width, height = slide.dimensions
        downsample = max(THUMBNAIL_UM / mpp, max(width, height) / THUMBNAIL_SIDE, 1.0)
        size = (max(1, round(width / downsample)), max(1, round(height / downsample)))
        thumbnail = np.asarray(slide.get_thumbnail(size))
        downsample = width / thumbnail.shape[1]
        tissue = detect_tissue(thumbnail, downsample * mpp)

        patch_px = round(patch_um / mpp)
        xs, ys = np.meshgrid(np.arange(0, width - patch_px + 1, patch_px), np.arange(0, height - patch_px + 1, patch_px))
        coords = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int64)
        centre = ((coords + patch_px / 2) / downsample).astype(int)
        centre = np.minimum(centre, [tissue.shape[1] - 1, tissue.shape[0] - 1])
        coords = coords[tissue[centre[:, 1], centre[:, 0]]]
        if skip_blank and len(coords):
            coords = _drop_blank(slide, coords, patch_px)
    return SlideGrid(path, mpp, patch_px, coords, tissue, downsample, thumbnail)


class SlideTileDataset(Dataset[tuple[torch.Tensor, int]]):
    """The patches of a SlideGrid as (uint8 C × H × W tensor of output_side pixels, index into
    grid.coords). Each DataLoader worker opens its own slide handle, lazily."""

    def __init__(self, grid: SlideGrid, output_side: int) -> None:
        self.grid, self.output_side = grid, output_side
        self._handles = SlideHandles(keep_open=1)

    def __len__(self) -> int:
        return len(self.grid)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.grid.coords[index]
        patch = read_patch(self._handles(self.grid.slide), (int(x), int(y)), self.grid.patch_px, self.output_side)
        return torch.from_numpy(patch).permute(2, 0, 1), index
