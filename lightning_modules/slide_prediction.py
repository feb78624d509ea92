"""TIL maps of whole slides: an exported classifier over every tissue patch of a slide, and
the map written in the formats users already load.

Patches stream through DataLoader workers (each opens the slide itself, reads runs of patches
band by band at the best pyramid level and resamples) as uint8 batches; normalisation and
softmax run batched on the device. Memory stays bounded whatever the slide size: only a few
batches are in flight.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader

from data.errors import DataError
from data.slides import best_level, on_white, open_slide, resample
from data.sources import CLASS_NAMES, PATCH_UM
from data.tiling import BLANK_STD, SlideGrid, SlideTileDataset, tile_slide
from lightning_modules.datamodule import PatchDataModule
from models.errors import ModelError
from models.export import ExportedModel, Preprocessing, apply_umask
from models.spec import ArchSpec

SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm"}
TIL_CLASS = "til-positive"
TIL_THRESHOLD = 0.5
CLASS_COLOURS = {"til-positive": (220, 30, 30), "til-negative": (40, 110, 220)}
HEATMAP_OPACITY = 0.55
HEATMAP_SIDE = 1024  # pixels of the map's long side; the title and colour bar come around it
BAND_PX = 4096  # width of the bands patches are read in, in pixels of the level read


def training_preprocessing(spec: ArchSpec) -> Preprocessing:
    """What PatchDataModule fed the network in training: 50 µm patches at its input side,
    normalised by the data module's mean and std, classes in label order."""
    return Preprocessing(spec.input_size, tuple(PatchDataModule.mean), tuple(PatchDataModule.std), CLASS_NAMES, PATCH_UM)


def find_slides(arguments: Sequence[str]) -> list[Path]:
    """Slide files named directly, in folders (by suffix) or by glob patterns, each once.
    Paths that do not exist are kept, so that they are reported with the other failures."""
    slides: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            slides += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
        elif path.exists():
            slides.append(path)
        else:
            slides += sorted(Path(match) for match in glob.glob(argument) if Path(match).is_file()) or [path]
    slides = list(dict.fromkeys(slides))
    if not slides:
        raise DataError(f"no slides in {' '.join(arguments)}: give slide files ({', '.join(sorted(SLIDE_SUFFIXES))}), folders or globs")
    by_name: dict[str, Path] = {}
    for slide in slides:
        if slide.stem in by_name:
            raise DataError(
                f"{by_name[slide.stem]} and {slide} share the name {slide.stem!r}, so their outputs would collide: predict them separately"
            )
        by_name[slide.stem] = slide
    return slides


class ClassProbabilities(nn.Module):
    """uint8 patches in, class probabilities out (N x classes, in the export's class order): the
    export's normalisation and the softmax folded around the network, so that workers ship
    compact uint8 batches."""

    def __init__(self, exported: ExportedModel) -> None:
        super().__init__()
        self.network = exported.model
        # (x / 255 - mean) / std, as one multiply-add on the uint8 values.
        std = torch.tensor(exported.preprocessing.std).view(1, 3, 1, 1)
        mean = torch.tensor(exported.preprocessing.mean).view(1, 3, 1, 1)
        self.register_buffer("scale", 1 / (255 * std))
        self.register_buffer("shift", -mean / std)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        logits = self.network(patches.float() * self.scale + self.shift)
        return logits.softmax(dim=1)


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
        return np.lexsort((x, y, band)).tolist()

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
    for previous, index in zip(indices, indices[1:]):
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


@dataclass(frozen=True)
class SlidePrediction:
    grid: SlideGrid  # the patches mapped: tissue, not near-blank
    dimensions: tuple[int, int]  # level-0 width and height
    class_names: tuple[str, ...]  # the export's classes, named as its WSInfer config names them
    probabilities: np.ndarray  # patches x classes: each grid patch's probability of each class
    blank_patches: int  # tissue patches left out as near-blank
    tiling_seconds: float
    inference_seconds: float

    @property
    def name(self) -> str:
        return self.grid.slide.stem

    @property
    def probability_columns(self) -> list[str]:
        """The probability columns as WSInfer names them: prob_<class name>."""
        return [f"prob_{name}" for name in self.class_names]

    @property
    def til_probabilities(self) -> np.ndarray:
        return self.probabilities[:, self.class_names.index(TIL_CLASS)]

    @property
    def til_positive_fraction(self) -> float:
        return float(np.mean(self.til_probabilities >= TIL_THRESHOLD)) if len(self.grid) else 0.0

    def summary(self) -> dict[str, object]:
        width, height = self.dimensions
        seconds = self.tiling_seconds + self.inference_seconds
        return {
            "slide": str(self.grid.slide),
            "mpp": self.grid.mpp,
            "patch_px": self.grid.patch_px,
            "patch_um": self.grid.patch_px * self.grid.mpp,
            "patches": (width // self.grid.patch_px) * (height // self.grid.patch_px),
            "tissue_patches": len(self.grid),
            "blank_patches": self.blank_patches,
            "til_positive_fraction": self.til_positive_fraction,
            "threshold": TIL_THRESHOLD,
            "seconds": seconds,
            "tiling_seconds": self.tiling_seconds,
            "inference_seconds": self.inference_seconds,
            "patches_per_second": len(self.grid) / seconds if seconds else 0.0,
        }


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ModelError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device} asked for but no CUDA GPU is available: use --device cpu")
    return resolved


def default_workers(device: torch.device) -> int:
    """Patch-reading workers: on a CPU one, as every core a reader takes is one torch's threads
    lose, and one reads several times faster than a reduced network classifies (see
    bench/README.md); on a GPU, every core the main process leaves free, up to 8."""
    return 1 if device.type == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))


class SlidePredictor:
    """An exported TIL classifier, ready to map slide after slide."""

    def __init__(
        self,
        exported: ExportedModel,
        batch_size: int = 64,
        workers: int | None = None,
        device: str = "auto",
        show_progress: bool = True,
    ) -> None:
        self.exported, self.batch_size, self.show_progress = exported, batch_size, show_progress
        self.device = resolve_device(device)
        self.workers = default_workers(self.device) if workers is None else workers
        names = exported.preprocessing.class_names
        if TIL_CLASS not in names:
            raise ModelError(f"{exported.folder} classifies {', '.join(names)}, not {TIL_CLASS}: export a TIL classifier")
        self.net = ClassProbabilities(exported).to(self.device).eval()

    @property
    def input_size(self) -> int:
        return self.exported.preprocessing.input_size

    def predict(self, slide: Path, mpp: float | None = None) -> SlidePrediction:
        """The TIL map of one slide; DataError if it is not a readable slide or has no MPP."""
        start = time.perf_counter()
        grid = tile_slide(slide, self.exported.preprocessing.patch_um, mpp, skip_blank=False)  # see collate_without_blanks
        with open_slide(grid.slide) as handle:
            dimensions = handle.dimensions
        tiled = time.perf_counter()
        probabilities = self.probabilities(grid)
        mapped = ~np.isnan(probabilities).any(axis=1)
        return SlidePrediction(
            replace(grid, coords=grid.coords[mapped]), dimensions, self.exported.preprocessing.class_names,
            probabilities[mapped], int((~mapped).sum()), tiled - start, time.perf_counter() - tiled,
        )

    def probabilities(self, grid: SlideGrid) -> np.ndarray:
        """Class probabilities of each patch of the grid (patches x classes), in grid order; NaN
        for near-blank patches."""
        probabilities = np.full((len(grid), len(self.exported.preprocessing.class_names)), np.nan, np.float32)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not self.show_progress, transient=True) as progress, torch.inference_mode():
            task = progress.add_task(f"Mapping {grid.slide.name}", total=len(grid))
            for batch in self.loader(grid):
                if len(batch.indices):
                    scores = self.net(batch.patches.to(self.device, non_blocking=True))
                    probabilities[batch.indices.numpy()] = scores.float().cpu().numpy()
                progress.advance(task, batch.read)
        return probabilities

    def loader(self, grid: SlideGrid) -> DataLoader:
        workers = self.workers if len(grid) > self.batch_size else 0  # workers do not pay off for a batch or two
        dataset = SlideStripDataset(grid, self.input_size)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=dataset.band_order(),
            collate_fn=collate_without_blanks,
            num_workers=workers,
            prefetch_factor=4 if workers else None,
            pin_memory=self.device.type == "cuda",
        )


def prepare_output(out: Path, overwrite: bool = False) -> None:
    """Create `out` and check it can be written, before any slide is read: hours of inference
    must not end in a permission error. A folder that already holds files is refused unless
    `overwrite`, with which write_outputs replaces its own files there and no others."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(
            f"--out {out} already holds files: choose another --out, or pass --overwrite to replace "
            "the maps of these slides (other files are kept)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".nar-write-check.", dir=out))  # as write_outputs stages its files
    except OSError as error:
        reason = error.strerror or error
        raise DataError(f"cannot write to --out {out} ({reason}): choose a folder you can write to") from None


def write_outputs(prediction: SlidePrediction, out: Path) -> Path:
    """Write the slide's TIL map into out/<slide name>/ and return that folder. Every file is
    written before any is put in place; in an existing folder, which may hold the user's own
    files, only the files of the same names are replaced."""
    folder = Path(out) / prediction.name
    if os.path.lexists(folder) and not folder.is_dir():
        raise DataError(f"{folder}, meant for {prediction.name}'s maps, is not a folder: move it or use another --out")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{prediction.name}.", dir=folder.parent))
    try:
        _write_stony_brook(prediction, staging / f"prediction-{prediction.name}")
        _write_csv(prediction, staging / f"{prediction.name}.csv")
        _write_geojson(prediction, staging / f"{prediction.name}.geojson")
        heatmap(prediction).save(staging / f"{prediction.name}.heatmap.png", compress_level=1)  # half the time, a fifth larger
        (staging / "summary.json").write_text(json.dumps(prediction.summary(), indent=2) + "\n")
        apply_umask(staging)
        if folder.is_dir():
            for path in staging.iterdir():
                os.replace(path, folder / path.name)
            staging.rmdir()
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _write_stony_brook(prediction: SlidePrediction, path: Path) -> None:
    """Stony Brook's TIL map: `x y prob` per patch, x, y its centre in level-0 pixels."""
    rows = np.column_stack([prediction.grid.centres, prediction.til_probabilities])
    np.savetxt(path, rows, fmt=["%d", "%d", "%.6f"], delimiter=" ")


def _write_csv(prediction: SlidePrediction, path: Path) -> None:
    """WSInfer's table: the patch's box in level-0 pixels and its probability of each class."""
    grid = prediction.grid
    side = np.full(len(grid), grid.patch_px)
    rows = np.column_stack([grid.coords, side, side, prediction.probabilities])
    header = ",".join(["minx", "miny", "width", "height", *prediction.probability_columns])
    np.savetxt(path, rows, fmt=["%d"] * 4 + ["%.6f"] * len(prediction.class_names), delimiter=",", header=header, comments="")


def _write_geojson(prediction: SlidePrediction, path: Path) -> None:
    """A QuPath FeatureCollection of tiles, streamed: a whole slide has ~10⁵ of them. The
    measurements are the CSV's probability columns."""
    side = prediction.grid.patch_px
    classes = {
        positive: json.dumps({"name": name, "color": list(CLASS_COLOURS[name])})
        for positive, name in ((True, "til-positive"), (False, "til-negative"))
    }
    columns = [json.dumps(column) for column in prediction.probability_columns]
    rows = zip(prediction.grid.coords.tolist(), prediction.til_probabilities.tolist(), prediction.probabilities.tolist())
    with path.open("w") as file:
        file.write('{"type": "FeatureCollection", "features": [')
        for i, ((x, y), til, probabilities) in enumerate(rows):
            box = f"[[{x}, {y}], [{x + side}, {y}], [{x + side}, {y + side}], [{x}, {y + side}], [{x}, {y}]]"
            measurements = ", ".join(f"{column}: {p:.6f}" for column, p in zip(columns, probabilities))
            file.write(
                f'{"," if i else ""}\n{{"type": "Feature", "geometry": {{"type": "Polygon", "coordinates": [{box}]}}, '
                f'"properties": {{"objectType": "tile", "classification": {classes[til >= TIL_THRESHOLD]}, '
                f'"measurements": {{{measurements}}}}}}}'
            )
        file.write("\n]}\n")


def heatmap(prediction: SlidePrediction) -> Image.Image:
    """The TIL-positive probability (jet colour map, as Stony Brook's maps) over the slide
    thumbnail, HEATMAP_SIDE pixels on its long side, with a colour bar and a title that gives
    the TIL-positive fraction."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    grid = prediction.grid
    cells = grid.coords // grid.patch_px
    probability = np.full((cells[:, 1].max() + 1, cells[:, 0].max() + 1) if len(grid) else (1, 1), np.nan, np.float32)
    probability[cells[:, 1], cells[:, 0]] = prediction.til_probabilities
    patch_side = grid.patch_px / grid.tissue_downsample  # in thumbnail pixels
    height, width = grid.thumbnail.shape[:2]
    # Laid out in pixels: the map with a margin around it, the colour bar and its labels to its
    # right, the title above; wide enough for the title whatever the slide's shape.
    scale = HEATMAP_SIDE / max(width, height)
    map_width, map_height, margin, bar, title = width * scale, height * scale, 24, 20, 64
    figure_width, figure_height = max(map_width + bar + 5 * margin, 640), map_height + title + margin
    figure = Figure(figsize=(figure_width / 100, figure_height / 100), dpi=100)
    canvas = FigureCanvasAgg(figure)

    def placed(left: float, wide: float) -> tuple[float, float, float, float]:
        """Axes `wide` pixels wide from `left`, level with the map, in figure fractions."""
        return left / figure_width, margin / figure_height, wide / figure_width, map_height / figure_height

    axes = figure.add_axes(placed(margin, map_width))
    # Resampled to the map's pixels beforehand: several times cheaper than by matplotlib.
    thumbnail = Image.fromarray(grid.thumbnail).resize((round(map_width), round(map_height)), Image.Resampling.BILINEAR)
    axes.imshow(thumbnail, extent=(0, width, height, 0))
    colours = ScalarMappable(Normalize(0, 1), "jet")
    extent = (0, probability.shape[1] * patch_side, probability.shape[0] * patch_side, 0)
    axes.imshow(probability, cmap=colours.cmap, norm=colours.norm, alpha=HEATMAP_OPACITY, interpolation="nearest", extent=extent)
    axes.set(xlim=(0, width), ylim=(height, 0))
    axes.set_axis_off()
    figure.colorbar(colours, cax=figure.add_axes(placed(2 * margin + map_width, bar)), label=f"probability {TIL_CLASS}")
    figure.suptitle(
        f"{prediction.name}: {prediction.til_positive_fraction:.1%} {TIL_CLASS}\n"
        f"({len(grid)} tissue patches of {grid.patch_px * grid.mpp:g} µm, threshold {TIL_THRESHOLD:g})",
        y=1 - 8 / figure_height, va="top", wrap=True,
    )
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
