"""Synthetic TIL patches: 50 × 50 µm of rendered H&E, labelled by lymphocyte count.

Positives hold two or more lymphocytes; negatives at most one, among tumour nuclei,
fibroblasts and look-alikes (small dense nuclei, apoptotic debris) that are told apart from
lymphocytes mostly by fine detail, so lowering the resolution costs accuracy as it does on
real slides. Patches come from synthetic slides that share stain and texture, so splits can
be made by slide.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import track

from nar_search.data.difficulty import SYNTHETIC_MPP, DifficultyName
from nar_search.data.errors import DataError
from nar_search.data.sources import CLASS_NAMES, PATCH_UM
from nar_search.data.tissue import DENSE_NUCLEUS, LYMPHOCYTE, Appearance, Texture, render


@dataclass(frozen=True)
class Difficulty:
    extra_lymphocytes: float  # positives hold 2 + Poisson(this) lymphocytes
    lone_lymphocyte: float  # chance that a negative holds one lymphocyte
    lookalikes: float  # look-alikes per patch, in both classes
    closeness: float  # how much look-alikes resemble lymphocytes, 0-1
    stain_variation: float
    blur_um: tuple[float, float]


DIFFICULTIES: dict[DifficultyName, Difficulty] = {
    "easy": Difficulty(extra_lymphocytes=4.0, lone_lymphocyte=0.3, lookalikes=0.5, closeness=0.0, stain_variation=0.5, blur_um=(0.2, 0.4)),
    # Tuned so that a CNN reaches an AUC of about 0.9 at 100 px and clearly less at 32 px.
    "default": Difficulty(
        extra_lymphocytes=1.5, lone_lymphocyte=0.7, lookalikes=2.5, closeness=0.2, stain_variation=1.0, blur_um=(0.2, 0.5)
    ),
    "hard": Difficulty(extra_lymphocytes=1.0, lone_lymphocyte=0.8, lookalikes=3.5, closeness=0.5, stain_variation=1.5, blur_um=(0.3, 0.8)),
}

# Nuclei whose centre lies outside the patch still show their cut edge.
_MARGIN_UM = 8.0
_LOOKALIKE_CLUMPING = 0.8  # gamma shape of the look-alike rate: lower, patchier


@dataclass(frozen=True)
class SyntheticPatch:
    image: np.ndarray  # H × W × 3 uint8
    label: int  # as recorded, after label noise
    slide: str
    lymphocytes: int  # centred inside the patch


def _lymphocyte_centres(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Lymphocytes inside the patch, often in a cluster."""
    if rng.random() < 0.6:
        centre = rng.uniform(8, PATCH_UM - 8, 2)
        points = centre + rng.normal(0, 7.0, (count, 2))
    else:
        points = rng.uniform(0, PATCH_UM, (count, 2))
    points = np.clip(points, 0.5, PATCH_UM - 0.5)
    return points[:, 0], points[:, 1]


def _border_centres(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Lymphocytes centred just outside the patch: partly visible, not counted."""
    along = rng.uniform(0, PATCH_UM, count)
    outside = rng.uniform(0.5, 4.0, count)
    edge = rng.integers(0, 4, count)
    x = np.choose(edge, [along, along, -outside, PATCH_UM + outside])
    y = np.choose(edge, [-outside, PATCH_UM + outside, along, along])
    return x, y


def lymphocyte_count(rng: np.random.Generator, positive: bool, difficulty: Difficulty) -> int:
    """Lymphocytes centred inside a patch: two or more make it TIL-positive."""
    return 2 + rng.poisson(difficulty.extra_lymphocytes) if positive else int(rng.random() < difficulty.lone_lymphocyte)


def patch_nuclei(rng: np.random.Generator, texture: Texture, lymphocytes: int, difficulty: Difficulty) -> np.ndarray:
    """All nuclei of one patch, `lymphocytes` of them lymphocytes centred inside it."""
    # Debris and plasma cells gather in patches (necrosis, inflammation): their number varies
    # widely, so that counting dark blobs alone does not tell the classes apart.
    background = texture.cells(
        rng,
        (-_MARGIN_UM, -_MARGIN_UM, PATCH_UM + _MARGIN_UM, PATCH_UM + _MARGIN_UM),
        lookalikes=difficulty.lookalikes * rng.gamma(_LOOKALIKE_CLUMPING, 1 / _LOOKALIKE_CLUMPING),
        lookalike=DENSE_NUCLEUS.toward(LYMPHOCYTE, difficulty.closeness),
    )
    inside = LYMPHOCYTE.sample(rng, *_lymphocyte_centres(rng, lymphocytes))
    border = LYMPHOCYTE.sample(rng, *_border_centres(rng, rng.poisson(0.7)))
    return np.concatenate([background, inside, border])


def generate_patches(
    n: int,
    seed: int = 0,
    difficulty: DifficultyName = "default",
    mpp: float = SYNTHETIC_MPP,
    label_noise: float = 0.0,
    slides: int | None = None,
) -> Iterator[SyntheticPatch]:
    """n patches, half of them positive, deterministic for a seed."""
    if difficulty not in DIFFICULTIES:
        raise DataError(f"unknown difficulty {difficulty!r}; choose one of {', '.join(DIFFICULTIES)}")
    if not 0 <= label_noise <= 0.5:
        raise DataError(f"label noise {label_noise} is not a fraction in [0, 0.5]")
    preset = DIFFICULTIES[difficulty]
    slides = slides or max(4, n // 40)
    side = round(PATCH_UM / mpp)
    labels = np.random.default_rng((seed, 0)).permutation(np.arange(n) % 2)
    flipped = np.random.default_rng((seed, 1)).random(n) < label_noise
    appearances = [
        Appearance.sample(np.random.default_rng((seed, 2, slide)), preset.stain_variation, preset.blur_um) for slide in range(slides)
    ]
    tumour_bias = np.random.default_rng((seed, 3)).normal(0, 0.6, slides)
    for i in range(n):
        slide = i * slides // n
        rng = np.random.default_rng((seed, 4, i))
        texture = Texture.sample(rng, nest_bias=tumour_bias[slide])
        lymphocytes = lymphocyte_count(rng, bool(labels[i]), preset)
        nuclei = patch_nuclei(rng, texture, lymphocytes, preset)
        image = render(appearances[slide], texture, nuclei, rng, origin_um=(0.0, 0.0), shape=(side, side), mpp=mpp)
        yield SyntheticPatch(image, int(labels[i] ^ flipped[i]), f"slide-{slide:03d}", lymphocytes)


def write_patches(
    out: str | Path,
    n: int,
    seed: int = 0,
    difficulty: DifficultyName = "default",
    mpp: float = SYNTHETIC_MPP,
    label_noise: float = 0.0,
    slides: int | None = None,
) -> Path:
    """Write patches as out/<class>/<slide>_<index>.png plus out/manifest.csv; returns the manifest.
    `out` must be new or an empty folder, so that every file in it is one written here: a stop
    takes them away again, with the folders made for them, and no file of the user's is replaced."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file, not a folder: give --out a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out} is not empty and its files could be overwritten: give --out a new or empty folder")
    made = [folder for folder in [out, *out.parents] if not folder.exists()]  # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot make {out} ({error.strerror or error}): choose another --out") from None
    try:  # the claim: a second command writing here at the same time fails this, before it deletes anything
        for name in CLASS_NAMES:
            (out / name).mkdir()
    except FileExistsError:
        raise DataError(f"another command is writing patches into {out}: wait for it to end, or give --out another folder") from None
    try:
        _write_patches(out, n, seed, difficulty, mpp, label_noise, slides)
    except BaseException:
        for entry in out.iterdir():  # all written here: the folder was new or empty
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        for folder in made:
            folder.rmdir()
        raise
    return out / "manifest.csv"


def _write_patches(out: Path, n: int, seed: int, difficulty: DifficultyName, mpp: float, label_noise: float, slides: int | None) -> None:
    patches = generate_patches(n, seed, difficulty, mpp, label_noise, slides)
    with (out / "manifest.csv").open("w", newline="") as file:
        rows = csv.writer(file)
        rows.writerow(["path", "label", "slide"])
        for i, patch in enumerate(track(patches, description="Rendering patches", total=n)):
            path = Path(CLASS_NAMES[patch.label]) / f"{patch.slide}_{i:06d}.png"
            Image.fromarray(patch.image).save(out / path, compress_level=1)
            rows.writerow([path.as_posix(), patch.label, patch.slide])
