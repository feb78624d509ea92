"""A synthetic whole slide: glass, pieces of tissue and TIL-rich regions, with the truth.

The layout (where tissue and TIL-rich regions lie) is a pair of smooth random fields on a
coarse grid; the tissue itself is rendered tile by tile with the patch renderer's textures,
so a 40k × 40k pixel slide takes bounded memory. The truth of `slides/slide.tiff` goes into
`slides-truth/`: `slide.mask.png` (0 glass, 128 tissue, 255 TIL-rich region, one pixel per
`downsample` level-0 pixels) and `slide.mask.json` (downsample, mpp, values).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.filters import gaussian

from nar_search.data.difficulty import SYNTHETIC_MPP
from nar_search.data.errors import DataError
from nar_search.data.pyramid import write_pyramid
from nar_search.data.sources import PATCH_UM
from nar_search.data.tissue import DENSE_NUCLEUS, LYMPHOCYTE, Appearance, Texture, render

MASK_VALUES = {"glass": 0, "tissue": 128, "til_region": 255}
TISSUE_SHARE = 0.45  # of the slide
TIL_SHARE = 0.25  # of the tissue
LYMPHOCYTES_PER_PATCH = {"til_region": 10.0, "tissue": 0.3}
_CELL_UM = 100.0  # nuclei are placed per cell of the plane, each from its own seed
_REACH_UM = 20.0  # no nucleus reaches further from its centre
_MARGIN_UM = 4.0  # rendered around each tile so that blur does not show the seams


@dataclass(frozen=True)
class SlideLayout:
    """Where tissue and TIL-rich regions lie: smooth fields on a grid of `downsample` level-0
    pixels, positive inside."""

    tissue: np.ndarray
    til: np.ndarray
    downsample: int

    @classmethod
    def sample(cls, rng: np.random.Generator, width: int, height: int) -> SlideLayout:
        downsample = 2 ** max(2, math.ceil(math.log2(max(width, height) / 1024)))
        shape = (math.ceil(height / downsample), math.ceil(width / downsample))

        def field(blob: float) -> np.ndarray:
            smooth = gaussian(rng.standard_normal(shape), blob * max(shape))  # type: ignore[no-untyped-call]  # skimage: unannotated
            return cast(np.ndarray, (smooth - smooth.mean()) / smooth.std())

        rows, cols = np.ogrid[-1 : 1 : shape[0] * 1j, -1 : 1 : shape[1] * 1j]
        tissue = field(1 / 10) - 2.5 * (rows**2 + cols**2)  # kept off the slide's edges
        tissue -= np.quantile(tissue, 1 - TISSUE_SHARE)
        til = field(1 / 16)
        til -= np.quantile(til[tissue > 0], 1 - TIL_SHARE)
        return cls(tissue.astype(np.float32), til.astype(np.float32), downsample)

    def interpolate(self, field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinear values at level-0 pixel positions."""
        return cast(
            np.ndarray, ndimage.map_coordinates(field, [y / self.downsample - 0.5, x / self.downsample - 0.5], order=1, mode="nearest")
        )

    def in_tissue(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.interpolate(self.tissue, x, y) > 0

    def in_til_region(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (self.interpolate(self.tissue, x, y) > 0) & (self.interpolate(self.til, x, y) > 0)

    def mask(self) -> np.ndarray:
        values = np.where(self.tissue > 0, MASK_VALUES["tissue"], MASK_VALUES["glass"])
        return np.where((self.tissue > 0) & (self.til > 0), MASK_VALUES["til_region"], values).astype(np.uint8)


class SlidePainter:
    """Renders level-0 tiles of a synthetic slide; every nucleus comes from the seed of its cell
    of the plane, so neighbouring tiles agree."""

    def __init__(self, layout: SlideLayout, mpp: float, tile: int, seed: int) -> None:
        self.layout, self.mpp, self.tile, self.seed = layout, mpp, tile, seed
        self.appearance = Appearance.sample(np.random.default_rng((seed, 1)))
        self.texture = Texture.sample(np.random.default_rng((seed, 2)))
        self.lookalike = DENSE_NUCLEUS.toward(LYMPHOCYTE, 0.5)

    def _cell(self, column: int, row: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, 3, column, row))
        box = (column * _CELL_UM, row * _CELL_UM, (column + 1) * _CELL_UM, (row + 1) * _CELL_UM)
        background = self.texture.cells(rng, box, lookalikes=1.0, lookalike=self.lookalike)
        patches = _CELL_UM**2 / PATCH_UM**2
        dense = rng.uniform(box[:2], box[2:], (rng.poisson(LYMPHOCYTES_PER_PATCH["til_region"] * patches), 2))
        sparse = rng.uniform(box[:2], box[2:], (rng.poisson(LYMPHOCYTES_PER_PATCH["tissue"] * patches), 2))
        px = 1 / self.mpp
        dense = dense[self.layout.in_til_region(*(dense * px).T)]
        sparse = sparse[self.layout.in_tissue(*(sparse * px).T)]
        lymphocytes = LYMPHOCYTE.sample(rng, *np.concatenate([dense, sparse]).T)
        background = background[self.layout.in_tissue(background["x"] * px, background["y"] * px)]
        return np.concatenate([background, lymphocytes])

    def __call__(self, x: int, y: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, 4, x, y))
        margin = math.ceil(_MARGIN_UM / self.mpp)
        side = self.tile + 2 * margin
        columns = np.arange(x - margin, x - margin + side) + 0.5
        rows = np.arange(y - margin, y - margin + side) + 0.5
        tissue = self.layout.interpolate(self.layout.tissue, *np.meshgrid(columns, rows))
        if tissue.max() <= 0:
            return self.appearance.glass(rng, (self.tile, self.tile))
        first = np.maximum(((np.array([x, y]) - margin) * self.mpp - _REACH_UM) // _CELL_UM, 0).astype(int)
        last = (((np.array([x, y]) - margin + side) * self.mpp + _REACH_UM) // _CELL_UM).astype(int)
        cells = [(column, row) for row in range(first[1], last[1] + 1) for column in range(first[0], last[0] + 1)]
        nuclei = np.concatenate([self._cell(column, row) for column, row in cells])
        origin_um = ((x - margin) * self.mpp, (y - margin) * self.mpp)
        # A soft edge a few µm wide, like a section's border.
        alpha = np.clip(tissue / 0.05 + 0.5, 0, 1)
        image = render(self.appearance, self.texture, nuclei, rng, origin_um=origin_um, shape=(side, side), mpp=self.mpp, tissue=alpha)
        return image[margin:-margin, margin:-margin]


@dataclass(frozen=True)
class SlideTruth:
    tissue: np.ndarray  # bool, one pixel per `downsample` level-0 pixels
    til_region: np.ndarray  # bool
    downsample: int


def truth_paths(slide: Path) -> tuple[Path, Path]:
    """The ground-truth mask and JSON sidecar of a synthetic slide, in `<slide's folder>-truth/`
    beside the slide's folder: WSInfer takes every entry of a slide folder, a sub-folder too, for
    a slide (and aborts on two files of one stem), so that folder must hold slides only."""
    folder = Path(os.path.abspath(slide)).parent  # absolute, so that the folder of a bare `slide.tiff` has a name
    if not folder.name:
        raise DataError(f"{slide} is in the root folder, which has no sibling for its ground truth: write it into a folder")
    truth = folder.with_name(f"{folder.name}-truth")
    return truth / f"{Path(slide).stem}.mask.png", truth / f"{Path(slide).stem}.mask.json"


def read_slide_truth(slide: str | Path) -> SlideTruth:
    mask_path, sidecar = truth_paths(Path(slide))
    mask = np.asarray(Image.open(mask_path))
    downsample = json.loads(sidecar.read_text())["downsample"]
    return SlideTruth(mask > MASK_VALUES["glass"], mask == MASK_VALUES["til_region"], downsample)


def aperio_description(width: int, height: int, tile: int, mpp: float) -> str:
    """An ImageDescription that OpenSlide takes for an Aperio slide (AppMag and MPP)."""
    return (
        f"Aperio Image Library v12.0.0 (NAR Search synthetic)\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) "
        f"RAW|AppMag = {10 / mpp:g}|MPP = {mpp:g}"
    )


def write_synthetic_slide(
    out: str | Path,
    *,
    width: int = 4096,
    height: int = 3072,
    mpp: float = SYNTHETIC_MPP,
    seed: int = 0,
    tile: int = 512,
    aperio: bool = False,
) -> int:
    """Write the slide, then its mask and sidecar (truth_paths); return the number of pyramid
    levels. DataError, before anything is written, if one of the three files exists."""
    out = Path(out)
    mask_path, sidecar = truth_paths(out)
    for path in (out, mask_path, sidecar):
        if os.path.lexists(path):
            raise DataError(f"{path} already exists and would be overwritten: choose another --out, or move it away")
    try:
        for folder in (out.parent, mask_path.parent):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot write {out} and its truth in {mask_path.parent} ({error.strerror or error}): choose another --out"
        ) from None
    layout = SlideLayout.sample(np.random.default_rng((seed, 0)), width, height)
    description = aperio_description(width, height, tile, mpp) if aperio else None
    painter = SlidePainter(layout, mpp, tile, seed)
    levels = write_pyramid(out, width, height, painter, mpp=mpp, tile=tile, description=description)
    Image.fromarray(layout.mask()).save(mask_path)
    truth = {"slide": out.name, "downsample": layout.downsample, "mpp": mpp, "values": MASK_VALUES}
    sidecar.write_text(json.dumps(truth, indent=2))
    return levels
