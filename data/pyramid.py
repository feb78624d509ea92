"""Writing a tiled, pyramidal RGB TIFF that OpenSlide opens, tile by tile in bounded memory.

Level 0 comes from a tile function; each further level averages 2 × 2 blocks of the level
above and is written as a reduced-resolution directory (subfiletype 1) in the main chain,
with the resolution in pixels per centimetre so that OpenSlide reports the MPP. Tiles are
JPEG in YCbCr, as scanners store them (Aperio's SVS), so that reading a synthetic slide costs
what reading a real one does. Only the level being built is kept, in a memory-mapped scratch
file beside the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import tifffile
from rich.progress import Progress

from nar_search.data.errors import DataError

JPEG_QUALITY = 90
TileSource = Callable[[int, int], np.ndarray]  # (x, y) -> tile × tile × 3 uint8


def level_shapes(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """(width, height) of every level: halving until one tile holds the level."""
    shapes = [(width, height)]
    while max(shapes[-1]) > tile:
        w, h = shapes[-1]
        shapes.append(((w + 1) // 2, (h + 1) // 2))
    return shapes


def _stored_tile(level: np.ndarray, tile: int, x: int, y: int) -> np.ndarray:
    block = level[y : y + tile, x : x + tile]
    return np.pad(block, ((0, tile - block.shape[0]), (0, tile - block.shape[1]), (0, 0)), constant_values=255)


def _tiles(
    source: TileSource, shape: tuple[int, int], tile: int, below: np.ndarray | None, advance: Callable[[], None]
) -> Iterator[np.ndarray]:
    """The tiles of one level in TIFF order, storing their 2 × 2 averages into the level below."""
    width, height = shape
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            pixels = source(x, y)
            if below is not None:
                half = pixels.reshape(tile // 2, 2, tile // 2, 2, 3).mean((1, 3)).round().astype(np.uint8)
                target = below[y // 2 : y // 2 + tile // 2, x // 2 : x // 2 + tile // 2]
                target[...] = half[: target.shape[0], : target.shape[1]]
            advance()
            # Last: the writer stops asking once it has every tile.
            yield pixels


def write_pyramid(
    path: Path, width: int, height: int, level0: TileSource, *, mpp: float, tile: int = 512, description: str | None = None
) -> int:
    """Write the slide and return its number of levels. level0(x, y) gives the tile whose
    top-left corner is (x, y); tiles reaching past the edge are cropped by readers."""
    if tile % 16:
        raise DataError(f"tile side {tile} must be a multiple of 16 (TIFF tiles), e.g. 256 or 512")
    shapes = level_shapes(width, height, tile)
    total = sum(math.ceil(w / tile) * math.ceil(h / tile) for w, h in shapes)
    with (
        TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as scratch,
        # Classic TIFF offsets end at 4 GiB: switch well before, counting all levels uncompressed.
        tifffile.TiffWriter(path, bigtiff=width * height * 4 > 2**31) as tiff,
        Progress() as progress,
    ):
        task = progress.add_task(f"Writing {path.name}", total=total)
        source = level0
        for level, shape in enumerate(shapes):
            below = None
            if level + 1 < len(shapes):
                w, h = shapes[level + 1]
                below = np.lib.format.open_memmap(Path(scratch) / f"level{level + 1}.npy", "w+", np.uint8, (h, w, 3))
            pixels_per_cm = 1e4 / (mpp * 2**level)
            tiff.write(
                _tiles(source, shape, tile, below, partial(progress.advance, task)),
                shape=(shape[1], shape[0], 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": JPEG_QUALITY},
                subfiletype=1 if level else 0,
                resolution=(pixels_per_cm, pixels_per_cm),
                resolutionunit="CENTIMETER",
                description=description if level == 0 else None,
                metadata=None,
                maxworkers=1,  # more would buffer hundreds of tiles ahead
            )
            if below is not None:
                source = partial(_stored_tile, below, tile)
    return len(shapes)
