"""TIL maps of whole slides: an exported classifier over every tissue patch of a slide, and
the map written in the formats users already load.

Patches stream through DataLoader workers (each opens the slide itself, reads runs of patches
band by band at the best pyramid level and resamples) as uint8 batches; normalisation and
softmax run batched on the device. Memory stays bounded whatever the slide size: only a few
batches are in flight.

Engines: PyTorch (channels-last; float16 on a GPU), ONNX Runtime on the export's model.onnx
(the CPU default) and ONNX Runtime on an INT8 quantisation calibrated on tissue patches. Runs
over many slides resume (complete maps by the same model are skipped), split into shards for
array jobs, and list every slide in a table.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader

from nar_search.data.errors import DataError
from nar_search.data.slides import best_level, on_white, open_slide, resample
from nar_search.data.sources import CLASS_NAMES, IMAGE_SUFFIXES, PATCH_MEAN, PATCH_STD, PATCH_UM
from nar_search.data.tiling import BLANK_STD, SlideGrid, SlideTileDataset, tile_slide
from nar_search.models.errors import ModelError
from nar_search.models.export import ONNX_FILE, ExportedModel, Preprocessing, apply_umask
from nar_search.models.spec import ArchSpec

SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm"}
TIL_CLASS = "til-positive"
TIL_THRESHOLD = 0.5
CLASS_COLOURS = {"til-positive": (220, 30, 30), "til-negative": (40, 110, 220)}
HEATMAP_OPACITY = 0.55
HEATMAP_SIDE = 1024  # pixels of the map's long side; the title and colour bar come around it
BAND_PX = 4096  # width of the bands patches are read in, in pixels of the level read
ENGINES = ("auto", "torch", "onnx", "onnx-int8")
INT8_ENGINE = "onnx-int8"
CALIBRATION_PATCHES = 256  # patches an INT8 quantisation is calibrated (and its agreement measured) on
# Calibration runs an ONNX model that outputs every tensor's range; its memory grows with the
# batch: +1.37 GB at 64 patches, +450 MB at 16, +300 MB at 8 (reduced resnetv2_50, 76 px), in
# the same time.
CALIBRATION_BATCH = 8
INT8_AGREEMENT = 0.99  # share of calls at TIL_THRESHOLD that INT8 should keep; below it the run says so
INT8_CACHE = ".int8-cache"  # in --out: INT8 models by export, calibration patches and settings
# ONNX Runtime's static quantisation as measured on a reduced resnetv2_50 (76 px, AVX2, 2 threads,
# under load): QDQ with uint8 activations and per-channel int8 weights ran 1.9x ONNX Runtime's
# float32 (int8 activations 1.3x); quant_pre_process beforehand changed neither speed nor outputs.
QUANTISATION = "QDQ, uint8 activations, int8 weights per channel, min-max calibration"
SUMMARY_FILE = "summary.json"
RUN_COLUMNS = ("slide", "patches", "tissue_patches", "til_positive_fraction", "seconds", "status", "reason")


def training_preprocessing(spec: ArchSpec) -> Preprocessing:
    """What PatchDataModule fed the network in training: 50 µm patches at its input side,
    normalised by the data module's mean and std, classes in label order."""
    return Preprocessing(spec.input_size, PATCH_MEAN, PATCH_STD, CLASS_NAMES, PATCH_UM)


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


class Normalise(nn.Module):
    """uint8 patches to the network's input: (x / 255 - mean) / std, as one multiply-add."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
        mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1)
        self.register_buffer("scale", 1 / (255 * std))
        self.register_buffer("shift", -mean / std)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return patches.float() * self.scale + self.shift


class ClassProbabilities(nn.Module):
    """uint8 patches in, class probabilities out (N x classes, in the export's class order): the
    export's normalisation and the softmax folded around the network, so that workers ship
    compact uint8 batches. Patches go channels-last, the layout oneDNN's and cuDNN's fastest
    convolutions take; `half` runs the network under float16 autocast (for GPUs)."""

    def __init__(self, exported: ExportedModel, half: bool = False) -> None:
        super().__init__()
        self.normalise = Normalise(exported.preprocessing)
        self.network = exported.model
        self.half = half

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        inputs = self.normalise(patches.contiguous(memory_format=torch.channels_last))
        with torch.autocast(inputs.device.type, torch.float16, enabled=self.half):
            logits = self.network(inputs)
        return logits.float().softmax(dim=1)


def torch_engine(exported: ExportedModel, device: torch.device) -> ClassProbabilities:
    """The network in PyTorch on `device`, its weights channels-last: 1.3-1.5x the speed of the
    default layout on a CPU (resolve_engine's note), and what GPUs' tensor cores need. On a GPU
    it runs in float16, not bfloat16: under CPU autocast, the reduced resnetv2_50's float16
    probabilities stayed within 2.2e-4 of float32's, bfloat16's only within 2.0e-3, over the
    1e-3 every engine keeps (its speed on a GPU is not measured yet)."""
    net = ClassProbabilities(exported, half=device.type == "cuda")
    return net.to(device, memory_format=torch.channels_last).eval()


class OnnxProbabilities:
    """ClassProbabilities on ONNX Runtime's CPU provider: the same normalisation and softmax
    around an ONNX model of the network (the export's model.onnx, or an INT8 quantisation)."""

    def __init__(self, model: Path, preprocessing: Preprocessing) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # as many as PyTorch would use
        # Threads that sleep between operators, as nar predict's OpenMP ones (search/openmp.py):
        # spinning ones took the cores from the patch readers and the rest of the machine (under
        # load: 1.01x PyTorch's speed, against 1.36x sleeping).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.normalise = Normalise(preprocessing)

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {"input": self.normalise(patches).numpy()})
        return torch.from_numpy(logits).softmax(dim=1)


def quantise(model: Path, inputs: np.ndarray, target: Path) -> None:
    """ONNX Runtime's static INT8 quantisation (QUANTISATION) of the ONNX `model` into `target`,
    its activation ranges calibrated on `inputs` (network inputs, normalised)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    batches = iter({"input": batch} for batch in np.array_split(inputs, -(-len(inputs) // CALIBRATION_BATCH)))
    reader = SimpleNamespace(get_next=lambda: next(batches, None))  # a CalibrationDataReader
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its advice (pre-processing, formats) goes to the root logger
    try:
        quantize_static(
            model,
            target,
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    finally:
        logging.disable(disabled)


def spread(count: int, wanted: int) -> list[int]:
    """Up to `wanted` indices out of `count`, evenly spread from the first to the last."""
    return np.unique(np.linspace(0, count - 1, min(wanted, count)).round().astype(int)).tolist()


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


class Int8Engines:
    """INT8 engines of an export: ONNX Runtime's static quantisation of its model.onnx,
    calibrated on each slide's own tissue patches or on one folder of patches, with its agreement
    with `reference` (the float32 model) on them. Kept in `cache` (when given) by export,
    calibration patches and settings: a folder's calibration is quantised once for every slide,
    shard and run; a slide's again only when the same slide is mapped again."""

    def __init__(
        self, exported: ExportedModel, reference: OnnxProbabilities, batch_size: int, cache: Path | None, folder: Path | None
    ) -> None:
        self.exported, self.reference, self.batch_size, self.cache, self.folder = exported, reference, batch_size, cache, folder
        side = exported.preprocessing.input_size
        self.folder_patches = None if folder is None else folder_calibration_patches(folder, side)
        self.latest: tuple[str, OnnxProbabilities, dict[str, object]] | None = None

    def for_slide(self, grid: SlideGrid) -> tuple[OnnxProbabilities, dict[str, object] | None]:
        """The INT8 engine for the slide and its report for summary.json; the float32 engine and
        None when there is no patch to calibrate on (a slide without tissue)."""
        side = self.exported.preprocessing.input_size
        patches = self.folder_patches if self.folder_patches is not None else slide_calibration_patches(grid, side)
        if not len(patches):
            return self.reference, None
        key = hashlib.sha256(b"\0".join([str(self.exported.sha256).encode(), QUANTISATION.encode(), patches.tobytes()])).hexdigest()
        if self.latest is None or self.latest[0] != key:
            self.latest = (key, *self._made(key[:32], patches))
        _, engine, report = self.latest
        return engine, {"calibration": str(self.folder or "slide"), **report}

    def _made(self, name: str, patches: np.ndarray) -> tuple[OnnxProbabilities, dict[str, object]]:
        with tempfile.TemporaryDirectory() as scratch:
            folder = self.cache or Path(scratch)
            model, report = folder / f"{name}.onnx", folder / f"{name}.json"
            if model.is_file() and report.is_file():
                return OnnxProbabilities(model, self.exported.preprocessing), json.loads(report.read_text())
            folder.mkdir(parents=True, exist_ok=True)
            inputs = self.reference.normalise(torch.from_numpy(patches)).numpy()
            _put_in_place(model, lambda staged: quantise(self.exported.folder / ONNX_FILE, inputs, staged))
            int8 = OnnxProbabilities(model, self.exported.preprocessing)
            agreement = self.agreement(int8, patches)
            _put_in_place(report, lambda staged: staged.write_text(json.dumps(agreement, indent=2) + "\n"))
            return int8, agreement

    def agreement(self, int8: OnnxProbabilities, patches: np.ndarray) -> dict[str, object]:
        """How INT8 compares with float32 on the patches: the share whose call at TIL_THRESHOLD is
        the same, and the largest difference of any class probability."""
        til = self.exported.preprocessing.class_names.index(TIL_CLASS)
        with torch.inference_mode():
            batches = torch.from_numpy(patches).split(self.batch_size)
            fp32, quantised = (torch.cat([engine(batch) for batch in batches]) for engine in (self.reference, int8))
        same = (fp32[:, til] >= TIL_THRESHOLD) == (quantised[:, til] >= TIL_THRESHOLD)
        return {
            "calibration_patches": len(patches),
            "agreement": same.float().mean().item(),
            "max_abs_difference": (fp32 - quantised).abs().max().item(),
            "threshold": TIL_THRESHOLD,
            "quantisation": QUANTISATION,
        }


def _put_in_place(path: Path, write: Callable[[Path], object]) -> None:
    """Write `path` through a staged file of this process and rename it into place: readers, and
    other shards writing the same file, never see half a file."""
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        write(staged)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


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


@dataclass(frozen=True)
class SlidePrediction:
    grid: SlideGrid  # the patches mapped: tissue, not near-blank
    dimensions: tuple[int, int]  # level-0 width and height
    class_names: tuple[str, ...]  # the export's classes, named as its WSInfer config names them
    probabilities: np.ndarray  # patches x classes: each grid patch's probability of each class
    blank_patches: int  # tissue patches left out as near-blank
    tiling_seconds: float
    inference_seconds: float
    model: Mapping[str, object]  # what made the map: SlidePredictor.model
    int8: Mapping[str, object] | None = None  # the INT8 engine's calibration and agreement with float32

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
            "model": dict(self.model),
            **({"int8": dict(self.int8)} if self.int8 else {}),
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


def resolve_engine(engine: str, device: torch.device, exported: ExportedModel) -> str:
    """The engine `engine` names on `device`; ModelError, in one line, if it cannot run there.

    auto: ONNX Runtime on a CPU when the export holds model.onnx (every `nar export` does), else
    PyTorch. Measured on a reduced resnetv2_50 (ϕ = 2, 76 px), batches of 64 uint8 patches,
    normalisation and softmax included, as medians of ratios over 5-15 alternating rounds, on
    the 2-core development machine while a benchmark kept it loaded (absolute speeds 30-70
    patches/s, well below a quiet machine's): against PyTorch in its default layout, PyTorch
    channels-last ran 1.32-1.48x and ONNX Runtime 1.29-1.53x in seven runs; ONNX Runtime against
    channels-last 1.035x and 1.045x (2 threads) and 1.13x (1 thread). End to end on a 4096²
    slide (748 patches, one reader, 2 threads): ONNX Runtime 1.38x, channels-last 1.33x. On a
    GPU, PyTorch: onnxruntime is installed without a GPU provider."""
    if engine not in ENGINES:
        raise ModelError(f"unknown engine {engine!r}: use {', '.join(ENGINES)}")
    has_onnx = (exported.folder / ONNX_FILE).is_file()
    if engine == "auto":
        return "onnx" if device.type == "cpu" and has_onnx else "torch"
    if engine != "torch" and device.type != "cpu":
        raise ModelError(f"--engine {engine} runs on the CPU, not on {device}: use --device cpu, or --engine torch")
    if engine != "torch" and not has_onnx:
        raise ModelError(
            f"{exported.folder} holds no {ONNX_FILE} for --engine {engine}: export the model with `nar export`, or use --engine torch"
        )
    return engine


class SlidePredictor:
    """An exported TIL classifier, ready to map slide after slide.

    `engine`: one of ENGINES (resolve_engine). For onnx-int8, `calibration` is a folder of patches
    to calibrate on (default: each slide's own tissue patches) and `cache` where the quantised
    models are kept (default: nowhere)."""

    def __init__(
        self,
        exported: ExportedModel,
        batch_size: int = 64,
        workers: int | None = None,
        device: str = "auto",
        show_progress: bool = True,
        engine: str = "auto",
        calibration: Path | None = None,
        cache: Path | None = None,
    ) -> None:
        self.exported, self.batch_size, self.show_progress = exported, batch_size, show_progress
        self.device = resolve_device("cpu" if engine.startswith("onnx") and device == "auto" else device)
        self.engine = resolve_engine(engine, self.device, exported)
        if calibration is not None and self.engine != INT8_ENGINE:
            raise DataError(f"--calibration calibrates --engine {INT8_ENGINE} only: add --engine {INT8_ENGINE}, or leave --calibration out")
        self.workers = default_workers(self.device) if workers is None else workers
        names = exported.preprocessing.class_names
        if TIL_CLASS not in names:
            raise ModelError(f"{exported.folder} classifies {', '.join(names)}, not {TIL_CLASS}: export a TIL classifier")
        if self.engine == "torch":
            self.net: ClassProbabilities | OnnxProbabilities = torch_engine(exported, self.device)
        else:  # onnx, and the float32 reference of onnx-int8
            self.net = OnnxProbabilities(exported.folder / ONNX_FILE, exported.preprocessing)
        self.int8 = Int8Engines(exported, self.net, batch_size, cache, calibration) if self.engine == INT8_ENGINE else None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one input shape throughout: worth timing cuDNN's kernels once

    @property
    def input_size(self) -> int:
        return self.exported.preprocessing.input_size

    @property
    def model(self) -> dict[str, object]:
        """What makes the maps: the export, named by its SHA-256 (ExportedModel.sha256), the
        engine and the device."""
        return {"export": str(self.exported.folder), "sha256": self.exported.sha256, "engine": self.engine, "device": str(self.device)}

    def predict(self, slide: Path, mpp: float | None = None) -> SlidePrediction:
        """The TIL map of one slide; DataError if it is not a readable slide or has no MPP."""
        start = time.perf_counter()
        grid = tile_slide(slide, self.exported.preprocessing.patch_um, mpp, skip_blank=False)  # see collate_without_blanks
        with open_slide(grid.slide) as handle:
            dimensions = handle.dimensions
        tiled = time.perf_counter()
        net, int8 = (self.net, None) if self.int8 is None else self.int8.for_slide(grid)
        probabilities = self.probabilities(grid, net)
        mapped = ~np.isnan(probabilities).any(axis=1)
        return SlidePrediction(
            replace(grid, coords=grid.coords[mapped]),
            dimensions,
            self.exported.preprocessing.class_names,
            probabilities[mapped],
            int((~mapped).sum()),
            tiled - start,
            time.perf_counter() - tiled,
            self.model,
            int8,
        )

    def probabilities(self, grid: SlideGrid, net: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
        """Class probabilities of each patch of the grid (patches x classes) by `net` (default:
        the engine's), in grid order; NaN for near-blank patches."""
        net = self.net if net is None else net
        probabilities = np.full((len(grid), len(self.exported.preprocessing.class_names)), np.nan, np.float32)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not self.show_progress, transient=True) as progress, torch.inference_mode():
            task = progress.add_task(f"Mapping {grid.slide.name}", total=len(grid))
            for batch in self.loader(grid):
                if len(batch.indices):
                    scores = net(batch.patches.to(self.device, non_blocking=True))
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
    must not end in a permission error. A folder holding only nar predict's own outputs is
    fine (plan_run and RunTable decide per slide); one holding anything else is refused unless
    `overwrite`, which writes beside those files and never touches them."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder: choose another --out")
    if out.is_dir() and not overwrite and (foreign := _not_ours(out)):
        raise DataError(
            f"--out {out} holds files nar predict did not write ({', '.join(foreign[:3])}): choose another --out, "
            "or pass --overwrite to write beside them (they are kept)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".nar-write-check.", dir=out))  # as write_outputs stages its files
    except OSError as error:
        reason = error.strerror or error
        raise DataError(f"cannot write to --out {out} ({reason}): choose a folder you can write to") from None


def _not_ours(out: Path) -> list[str]:
    """The entries of `out` that are not nar predict's: its slide folders, run tables and hidden
    staging and caches are."""

    def ours(entry: Path) -> bool:
        if entry.name.startswith("."):
            return True
        if entry.is_file():
            return re.fullmatch(r"slides(-\d+-of-\d+)?\.csv", entry.name) is not None
        return entry.is_dir() and all(path.name in output_names(entry.name) for path in entry.iterdir())

    return sorted(entry.name for entry in out.iterdir() if not ours(entry))


def output_names(name: str) -> tuple[str, ...]:
    """The files of slide `name`'s TIL map, summary.json last: the order they are put in place."""
    return f"prediction-{name}", f"{name}.csv", f"{name}.geojson", f"{name}.heatmap.png", SUMMARY_FILE


def write_outputs(prediction: SlidePrediction, out: Path) -> Path:
    """Write the slide's TIL map into out/<slide name>/ and return that folder. Every file is
    written before any is put in place, summary.json last, so that a folder with it holds a
    complete map; in an existing folder, which may hold the user's own files, only the files
    of the same names are replaced."""
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
        (staging / SUMMARY_FILE).write_text(json.dumps(prediction.summary(), indent=2) + "\n")
        apply_umask(staging)
        if folder.is_dir():
            for name in output_names(prediction.name):
                os.replace(staging / name, folder / name)
            staging.rmdir()
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def finished_map(folder: Path, name: str) -> dict[str, object] | None:
    """The summary of the complete TIL map of slide `name` in `folder` (summary.json, written by
    nar predict, and every other file of the map), else None."""
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    complete = isinstance(summary, dict) and isinstance(summary.get("model"), dict)
    return summary if complete and all((folder / file).is_file() for file in output_names(name)) else None


def same_model(made: Mapping[str, object], model: Mapping[str, object]) -> bool:
    """Whether maps made by `made` (a summary's model) are what `model` would make: the same
    export, by SHA-256, at the same precision. Every float engine gives the same probabilities
    within 1e-3; INT8 only agrees with them at the threshold."""
    return (
        made.get("sha256") is not None
        and made.get("sha256") == model["sha256"]
        and ((made.get("engine") == INT8_ENGINE) == (model["engine"] == INT8_ENGINE))
    )


class RunPlan(NamedTuple):
    to_map: list[Path]
    skipped: list[tuple[Path, dict[str, object]]]  # slides this model has mapped, with their summaries


def plan_run(slides: Sequence[Path], out: Path, model: Mapping[str, object], overwrite: bool = False) -> RunPlan:
    """Which slides to map into `out`: every one with `overwrite`; otherwise those without a map
    there, skipping complete maps by the same model. DataError, before anything is written, if
    `out` holds other files of their maps (another model's, an incomplete map, or files of the
    same names that nar predict did not write): only `overwrite` replaces them."""
    to_map, skipped, taken = [], [], []
    for slide in slides:
        folder = out / slide.stem
        if overwrite or not any(os.path.lexists(folder / name) for name in output_names(slide.stem)):
            to_map.append(slide)
        elif (summary := finished_map(folder, slide.stem)) and same_model(summary["model"], model):
            skipped.append((slide, summary))
        else:
            taken.append(slide.stem)
    if taken:
        more = f" and {len(taken) - 3} more" if len(taken) > 3 else ""
        raise DataError(
            f"--out {out} holds maps of {', '.join(taken[:3])}{more} that this model did not make (another export or "
            "precision, an incomplete map, or not nar predict's files): pass --overwrite to replace them, or choose another --out"
        )
    return RunPlan(to_map, skipped)


@dataclass(frozen=True)
class Shard:
    """Part `index` of `count` of a run's slides, counted from 1 as SLURM array task ids are
    with `#SBATCH --array=1-N`."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`K/N`; DataError, in one line, for anything else or K outside 1..N."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise DataError(
                f"--shard {text} is not K/N with K from 1 to N: in a SLURM array started with --array=1-N, "
                "pass --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"
            )
        return cls(int(match[1]), int(match[2]))

    def of(self, slides: Sequence[Path]) -> list[Path]:
        """This shard's slides: every count-th of them in path order, from the index-th. The
        shards of one list are disjoint and together hold every slide."""
        return sorted(slides, key=str)[self.index - 1 :: self.count]

    @property
    def table_name(self) -> str:
        return "slides.csv" if self.count == 1 else f"slides-{self.index}-of-{self.count}.csv"


class RunTable:
    """The run's table of slides at `path`: RUN_COLUMNS, one row per slide, status mapped,
    skipped or failed (with the reason). Created on construction and rewritten whole after every
    row, through a staged file, so that a run cut short leaves a readable table of what it did.
    Each shard writes a table of its own (Shard.table_name): array jobs share --out, often on a
    network filesystem where file locks are unreliable, and separate files need none."""

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        if os.path.lexists(path) and not _is_run_table(path) and not (overwrite and path.is_file()):
            raise DataError(f"{path} exists and is not nar predict's table of slides: move it, or pass --overwrite to replace a file")
        self.path, self.rows = path, []
        self.write()

    def add(self, slide: Path, status: str, summary: Mapping[str, object] | None = None, reason: str = "") -> None:
        numbers = [summary[column] for column in RUN_COLUMNS[1:5]] if summary else [""] * 4
        self.rows.append([str(slide), *numbers, status, reason])
        self.write()

    def write(self) -> None:
        def rows(staged: Path) -> None:
            with staged.open("w", newline="") as file:
                csv.writer(file).writerows([RUN_COLUMNS, *self.rows])

        _put_in_place(self.path, rows)


def _is_run_table(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open(errors="replace") as file:
        return file.readline().strip() == ",".join(RUN_COLUMNS)


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
        y=1 - 8 / figure_height,
        va="top",
        wrap=True,
    )
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
