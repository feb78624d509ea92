"""Writes the demo's subset of the Kather 2016 tiles (see README.md here) from the full set.

    .venv/bin/python samples/kather2016/make_subset.py ../shared/data/kather2016

Every immune-cell tile (04_LYMPHO) is kept and at most NEGATIVES_PER_SOURCE tiles of each other
class from each source image, chosen by a fixed seed; background (08_EMPTY) is left out.
Tiles are downscaled from 150 to SIDE px (0.495 → 1.16 µm/px) and stored as JPEG, with their
names unchanged, so the source image stays readable in each name.
"""

from __future__ import annotations

import argparse
import random
import re
from collections import defaultdict
from pathlib import Path

from PIL import Image

from nar_search.data.sources import IMAGE_SUFFIXES

SIDE = 64
QUALITY = 90
NEGATIVES_PER_SOURCE = 30
POSITIVE, LEFT_OUT = "04_LYMPHO", "08_EMPTY"
SOURCE = re.compile(r"CRC-Prim-HE-\d+")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("full", type=Path, help="the full tile set: one folder per class")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    rng = random.Random(0)
    written = 0
    for folder in sorted(p for p in args.full.iterdir() if p.is_dir() and p.name != LEFT_OUT):
        by_source = defaultdict(list)
        for tile in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            by_source[SOURCE.search(tile.name).group(0)].append(tile)
        for tiles in by_source.values():
            kept = tiles if folder.name == POSITIVE else rng.sample(tiles, min(len(tiles), NEGATIVES_PER_SOURCE))
            (args.out / folder.name).mkdir(parents=True, exist_ok=True)
            for tile in kept:
                with Image.open(tile) as image:
                    image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS).save(
                        args.out / folder.name / tile.name, quality=QUALITY
                    )
                written += 1
    print(f"wrote {written} tiles into {args.out}")


if __name__ == "__main__":
    main()
