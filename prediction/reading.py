"""A slide's patches as the network reads them: runs of horizontally adjacent patches read with
one OpenSlide call each, band by band, in DataLoader workers that drop near-blank patches and
ship uint8 batches; and the tissue patches an INT8 quantisation is calibrated on."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import NamedTuple, cast

import numpy as np
import torch
from PIL import Image

from nar_search.data.errors import DataError
from nar_search.data.slides import best_level, on_white, resample
from nar_search.data.sources import IMAGE_SUFFIXES
from nar_search.data.tiling import BLANK_STD, SlideGrid, SlideTileDataset

BAND_PX = 4096  # width of the bands patches are read in, in pixels of the level read
CALIBRATION_PATCHES = 256  # patches an INT8 quantisation is calibrated (and its agreement measured) on


class SlideStripDataset(SlideTileDataset):
    """SlideTileDataset whose batches (the DataLoader asks through __getitems__) read every run of
    horizontally adjacent patches with one OpenSlide call at the pyramid level read_patch would
    use, then cut and resample each patch as read_patch does: OpenSlide's cost per call, not
    per pixel, dominates reading small patches."""

    def reading_level(self) -> tuple[int, float]:
        """The pyramid level the patches are read from (read_patch's choice) and its downsample."""
        slide = self._handles(self.grid.slide)
        level = best_level(slide, self.grid.patch_px / self.output_side)
        return level, slide.level_downsamples[level]

    def band_order(self) -> list[int]:
        """The grid's indices band by band, row by row within a band (bands BAND_PX wide at the
        level read). OpenSlide decodes whole tiles and caches 32 MB of them per handle: enough
        for a row of tiles across a band, too little across a slide 40k pixels wide, where
        reading whole rows of patches would decode each tile once per row of patches in it."""
        x, y = self.grid.coords.T
        band = x // round(BAND_PX * self.reading_level()[1])
        return cast(list[int], np.lexsort((x, y, band)).tolist())

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        slide, step, side = self._handles(self.grid.slide), self.grid.patch_px, self.output_side
        level, downsample = self.reading_level()
        items = []
        for run in _adjacent_runs(self.grid.coords, indices, step):
            x, y = self.grid.coords[run[0]]
            edges = [round(k * step / downsample) for k in range(len(run) + 1)]
            strip = on_white(slide.read_region((int(x), int(y)), level, (edges[-1], edges[1])))
            for k, index in enumerate(run):
                patch = resample(strip.crop((edges[k], 0, edges[k + 1], edges[1])), side)
                items.append((torch.from_numpy(np.array(patch)).permute(2, 0, 1), index))
        return items


def _adjacent_runs(coords: np.ndarray, indices: list[int], step: int) -> list[list[int]]:
    """The indices cut wherever a patch is not the right-hand neighbour of the one before."""
    runs = [[indices[0]]]
    for previous, index in itertools.pairwise(indices):
        if coords[index, 1] == coords[previous, 1] and coords[index, 0] == coords[previous, 0] + step:
            runs[-1].append(index)
        else:
            runs.append([index])
    return runs


class PatchBatch(NamedTuple):
    patches: torch.Tensor  # uint8 N x 3 x side x side, near-blank patches left out
    indices: torch.Tensor  # their indices into the grid
    read: int  # patches read, near-blank ones included


def collate_without_blanks(samples: list[tuple[torch.Tensor, int]]) -> PatchBatch:
    """A batch of SlideTileDataset items without the near-blank patches (Stony Brook's rule, as
    tile_slide applies it), judged in the worker on the patches as read for the network: one
    read per patch instead of a separate pass over the slide."""
    patches = torch.stack([patch for patch, _ in samples])
    indices = torch.tensor([index for _, index in samples])
    # numpy's std is ~10x faster than torch's on these small single-threaded reductions.
    pixels = patches.numpy().reshape(len(samples), 3, -1).astype(np.float32)
    keep = torch.from_numpy(pixels.std(axis=2).mean(axis=1) >= BLANK_STD)
    return PatchBatch(patches[keep], indices[keep], len(samples))


def spread(count: int, wanted: int) -> list[int]:
    """Up to `wanted` indices out of `count`, evenly spread from the first to the last."""
    return cast(list[int], np.unique(np.linspace(0, count - 1, min(wanted, count)).round().astype(int)).tolist())


def slide_calibration_patches(grid: SlideGrid, side: int) -> np.ndarray:
    """Up to CALIBRATION_PATCHES of the slide's tissue patches (uint8, N x 3 x side x side),
    spread over its grid, near-blank ones left out as in mapping."""
    if not len(grid):
        return np.zeros((0, 3, side, side), np.uint8)
    return collate_without_blanks(SlideStripDataset(grid, side).__getitems__(spread(len(grid), CALIBRATION_PATCHES))).patches.numpy()


def folder_calibration_patches(folder: Path, side: int) -> np.ndarray:
    """Up to CALIBRATION_PATCHES of the patch images in `folder` and below (50 µm patches, as
    training takes them), spread over their sorted paths, at the network's input side."""
    if not folder.is_dir():
        raise DataError(f"--calibration {folder} is not a folder: give a folder of tissue patch images")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DataError(
            f"--calibration {folder} holds no patch images ({', '.join(sorted(IMAGE_SUFFIXES))}): give a folder of tissue patches"
        )
    patches = []
    for index in spread(len(images), CALIBRATION_PATCHES):
        try:
            with Image.open(images[index]) as image:
                patches.append(np.asarray(resample(image.convert("RGB"), side)).transpose(2, 0, 1))
        except OSError as error:
            raise DataError(f"cannot read calibration patch {images[index]} ({error}): remove it from --calibration {folder}") from None
    return np.stack(patches)
