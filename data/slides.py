"""Whole-slide access through OpenSlide: opening with clear errors, microns per pixel,
reading a patch at the best pyramid level, and one handle per process."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import openslide
from PIL import Image

from nar_search.data.errors import DataError

SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm"}
SLIDE_FIX = "check that it opens in QuPath, or copy it again from the scanner"  # for a slide file that is corrupt
# OpenSlide picks the level below a requested downsample strictly; scanners store levels like
# 4.00012, so a request for exactly 4 would get the finer level.
_DOWNSAMPLE_SLACK = 1e-3


def open_slide(path: Path, named_in: str = "") -> openslide.OpenSlide:
    """Open a whole slide, or raise DataError naming it (and where it was named, e.g. 'x.csv line 3')."""
    where = f"{named_in}: " if named_in else ""
    if not Path(path).is_file():
        raise DataError(f"{where}slide {path} does not exist; check the path (relative paths start at the file that names them)")
    try:
        return openslide.OpenSlide(path)
    except openslide.OpenSlideError as error:
        # A slide's name and OpenSlide refuses it: a file cut short or damaged, not a wrong file;
        # but a TIFF in no format it knows is more likely a flat image than a damaged slide.
        suffix = Path(path).suffix.lower()
        flat = suffix in {".tif", ".tiff"} and isinstance(error, openslide.OpenSlideUnsupportedFormatError)
        if flat:
            fix = "it may be a flat image, not a tiled pyramidal slide: give the scanner's slide file, or check that it opens in QuPath"
        elif suffix in SLIDE_SUFFIXES:
            fix = f"it is corrupt or unreadable: {SLIDE_FIX}"
        else:
            fix = "give a slide file (.svs, .tiff, .ndpi, .mrxs, ...)"
        raise DataError(f"{where}{path} is not a whole-slide image OpenSlide can read ({error}): {fix}") from None


def slide_mpp(slide: openslide.OpenSlide, path: Path, override: float | None = None) -> float:
    """Microns per level-0 pixel: the override if given, else the slide's own; never a guess."""
    if override is not None:
        if override <= 0:
            raise DataError(f"mpp must be positive, got {override}")
        return float(override)
    values = [slide.properties.get(key) for key in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y)]
    if None in values:
        raise DataError(
            f"{path} records no microns per pixel (openslide.mpp-x/-y); pass the scanner's value with --mpp (e.g. 0.25 at 40x, 0.5 at 20x)"
        )
    return float(np.mean([float(value) for value in values if value is not None]))


def best_level(slide: openslide.OpenSlide, downsample: float) -> int:
    """The coarsest level whose downsample is at most `downsample` (give or take rounding)."""
    return slide.get_best_level_for_downsample(downsample * (1 + _DOWNSAMPLE_SLACK))


def read_patch(slide: openslide.OpenSlide, top_left: tuple[int, int], size: int, side: int) -> np.ndarray:
    """The square of `size` level-0 pixels at top_left, as side × side RGB (uint8), read from
    the coarsest level that still has enough pixels and flattened on white."""
    level = best_level(slide, size / side)
    read_side = max(1, round(size / slide.level_downsamples[level]))
    return np.array(resample(on_white(slide.read_region(top_left, level, (read_side, read_side))), side))


def resample(patch: Image.Image, side: int) -> Image.Image:
    """The patch at side × side pixels. Antialiased bilinear, as the training transform's
    torchvision Resize (and WSInfer's) resamples, so that the network sees what it learnt on."""
    return patch if patch.size == (side, side) else patch.resize((side, side), Image.Resampling.BILINEAR)


def on_white(region: Image.Image) -> Image.Image:
    """An RGBA region from OpenSlide as RGB on white: outside the slide it is transparent black."""
    if region.getchannel("A").getextrema() == (255, 255):
        return region.convert("RGB")  # all inside the slide: a fifth of compositing's cost
    return Image.alpha_composite(Image.new("RGBA", region.size, "white"), region).convert("RGB")


class SlideHandles:
    """Slides opened lazily, once per process: a DataLoader worker must not use a handle opened
    before it was forked. Keeps the most recently used few open."""

    def __init__(self, keep_open: int = 8) -> None:
        self.keep_open = keep_open
        self._pid: int | None = None
        self._open: OrderedDict[Path, openslide.OpenSlide] = OrderedDict()

    def __call__(self, path: Path) -> openslide.OpenSlide:
        if self._pid != os.getpid():
            self._pid, self._open = os.getpid(), OrderedDict()
        if path in self._open:
            self._open.move_to_end(path)
        else:
            self._open[path] = open_slide(path)
            if len(self._open) > self.keep_open:
                self._open.popitem(last=False)[1].close()
        return self._open[path]

    def __getstate__(self) -> dict[str, object]:
        # Handles stay in the process that opened them.
        return {"keep_open": self.keep_open, "_pid": None, "_open": OrderedDict()}
