"""What the slide benchmarks share: their slide and model options, the synthetic slide each
renders once, and the reduced network each maps it with unless given an export."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nar_search.models.spec import ArchSpec


def add_slide_and_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=8192, help="slide width, level-0 px (e.g. 40000)")
    parser.add_argument("--height", type=int, default=8192)
    parser.add_argument("--mpp", type=float, default=0.5, help="µm per level-0 pixel of the synthetic slide")
    parser.add_argument("--model", type=Path, help="export folder (default: a random reduced network)")
    parser.add_argument("--arch", default="resnetv2_50", help="timm model of the default network")
    parser.add_argument("--input-size", type=int, default=100, help="base input side of the default network")
    parser.add_argument("--phi", type=float, default=2.0, help="NAR ϕ of the default network")
    parser.add_argument("--batch-size", type=int, default=64)


def synthetic_slide(folder: Path, width: int, height: int, mpp: float) -> Path:
    """The slide, rendered once, alone in a folder of its own (its ground truth goes beside that
    folder): WSInfer takes every file of a slide folder for a slide."""
    from nar_search.data.synth_slide import truth_paths, write_synthetic_slide

    name = f"synthetic-{width}x{height}-{mpp:g}"
    path = folder / name / f"{name}.tiff"
    if not path.exists():
        print(f"rendering {path} (once)")
        try:
            write_synthetic_slide(path, width=width, height=height, mpp=mpp, seed=0)
        except BaseException:  # an interrupted slide would be taken for a finished one next time
            for written in (path, *truth_paths(path)):
                written.unlink(missing_ok=True)
            raise
    return path


def reduced_spec(arch: str, input_size: int, phi: float) -> ArchSpec:
    """The default network's spec: `arch` at `input_size`, reduced by NAR at `phi`; its weights
    are left random (seed the generator before building), as speed does not depend on them."""
    from nar_search.models.reduce import nar_reduce
    from nar_search.models.registry import original_spec

    original = original_spec(arch, input_size)
    return nar_reduce(original, phi) if phi else original
