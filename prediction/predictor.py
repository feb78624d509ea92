"""TIL maps of whole slides: an exported classifier over every tissue patch of a slide.

Patches stream through DataLoader workers (each opens the slide itself, reads runs of patches
band by band at the best pyramid level and resamples) as uint8 batches; normalisation and
softmax run batched on the device. Memory stays bounded whatever the slide size: only a few
batches are in flight."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from nar_search.data.errors import DataError
from nar_search.data.slides import open_slide
from nar_search.data.tiling import SlideGrid, tile_slide
from nar_search.models.errors import ModelError
from nar_search.models.export import ExportedModel
from nar_search.prediction.engine_choice import EngineChoice, choose_engine
from nar_search.prediction.engines import (
    INT8_ENGINE,
    Engine,
    EngineSet,
    Int8Engines,
    auto_engines,
    default_workers,
    resolve_device,
    resolve_engine,
)
from nar_search.prediction.network import TIL_CLASS, TIL_THRESHOLD
from nar_search.prediction.reading import SlideStripDataset, collate_without_blanks

Tag = TypeVar("Tag")  # what a caller of SlidePredictor.scores keeps with each batch
MPP_GIVEN, MPP_RECORDED = "--mpp", "slide metadata"  # where a map's MPP came from


class TiledSlide(NamedTuple):
    grid: SlideGrid  # every patch over tissue, near-blank ones too (see collate_without_blanks)
    dimensions: tuple[int, int]  # level-0 width and height
    seconds: float
    mpp_source: str  # MPP_GIVEN or MPP_RECORDED


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
    mpp_source: str = MPP_RECORDED

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
            "mpp_source": self.mpp_source,
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


class SlidePredictor:
    """An exported TIL classifier, ready to map slide after slide.

    `engine`: one of ENGINES (resolve_engine); auto is chosen on the first slide's patches
    (choose_engine, in about `choice_seconds`) unless the device leaves one engine. For
    onnx-int8, `calibration` is a folder of patches to calibrate on (default: each slide's own
    tissue patches) and `cache` where the quantised models are kept (default: nowhere)."""

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
        choice_seconds: float | None = None,
    ) -> None:
        self.exported, self.batch_size, self.show_progress, self.choice_seconds = exported, batch_size, show_progress, choice_seconds
        self.device = resolve_device("cpu" if engine.startswith("onnx") and device == "auto" else device)
        self.asked, self.engine = engine, resolve_engine(engine, self.device, exported)  # engine: "auto" until chosen
        if calibration is not None and self.engine != INT8_ENGINE:
            raise DataError(f"--calibration calibrates --engine {INT8_ENGINE} only: add --engine {INT8_ENGINE}, or leave --calibration out")
        self.workers = default_workers(self.device) if workers is None else workers
        names = exported.preprocessing.class_names
        if TIL_CLASS not in names:
            raise ModelError(f"{exported.folder} classifies {', '.join(names)}, not {TIL_CLASS}: export a TIL classifier")
        self.engines: EngineSet | None = EngineSet(exported, self.device, batch_size, cache, calibration)
        self.choice: EngineChoice | None = None  # --engine auto's, once made
        self.net: Engine
        self.int8: Int8Engines | None = None
        if engine == "auto" and self.engine != "auto":
            self.choice = EngineChoice(self.engine, auto_engines(self.device, exported)[1])
        if self.engine != "auto":
            self._take(self.engine)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one input shape throughout: worth timing cuDNN's kernels once

    def _take(self, engine: str) -> None:
        """Map every slide with `engine`; the engines built to measure and not taken are let go."""
        assert self.engines is not None
        self.engine, self.net = engine, self.engines.net(engine)
        self.int8 = self.engines.int8 if engine == INT8_ENGINE else None
        self.engines = None

    def choose_engine(self, grid: SlideGrid) -> EngineChoice:
        """--engine auto's choice, measured on the grid's slide unless made already; the engine
        chosen then maps every slide."""
        if self.choice is None:
            assert self.engines is not None, "choose_engine is for --engine auto"
            candidates, _ = auto_engines(self.device, self.exported)
            self.choice = choose_engine(self.engines, candidates, grid, self.scores, self.choice_seconds)
            self._take(self.choice.engine)
        return self.choice

    @property
    def input_size(self) -> int:
        return self.exported.preprocessing.input_size

    @property
    def model(self) -> dict[str, object]:
        """What makes the maps: the export, named by its SHA-256 (ExportedModel.sha256), the
        engine (auto until chosen; then how it was) and the device."""
        made_by = {"export": str(self.exported.folder), "sha256": self.exported.sha256, "engine": self.engine, "device": str(self.device)}
        return made_by | ({"engine_choice": self.choice.record()} if self.choice else {})

    def tile(self, slide: Path, mpp: float | None = None) -> TiledSlide:
        """The slide's grid of patches; DataError if it is not a readable slide or has no MPP."""
        start = time.perf_counter()
        grid = tile_slide(slide, self.exported.preprocessing.patch_um, mpp, skip_blank=False)  # see collate_without_blanks
        with open_slide(grid.slide) as handle:
            dimensions = handle.dimensions
        return TiledSlide(grid, dimensions, time.perf_counter() - start, MPP_RECORDED if mpp is None else MPP_GIVEN)

    def predict(self, slide: Path, mpp: float | None = None) -> SlidePrediction:
        """The TIL map of one slide (the engine chosen on it first, for --engine auto); DataError
        if it is not a readable slide or has no MPP."""
        tiled = self.tile(slide, mpp)
        if self.engine == "auto":
            self.choose_engine(tiled.grid)
        return self.predict_tiled(tiled)

    def predict_tiled(self, tiled: TiledSlide) -> SlidePrediction:
        """The TIL map of a slide tiled by `tile`, once the engine is chosen."""
        start = time.perf_counter()
        net, int8 = (self.net, None) if self.int8 is None else self.int8.for_slide(tiled.grid)
        probabilities = self.probabilities(tiled.grid, net)
        mapped = ~np.isnan(probabilities).any(axis=1)
        return SlidePrediction(
            replace(tiled.grid, coords=tiled.grid.coords[mapped]),
            tiled.dimensions,
            self.exported.preprocessing.class_names,
            probabilities[mapped],
            int((~mapped).sum()),
            tiled.seconds,
            time.perf_counter() - start,
            self.model,
            int8,
            tiled.mpp_source,
        )

    def probabilities(self, grid: SlideGrid, net: Engine | None = None) -> np.ndarray:
        """Class probabilities of each patch of the grid (patches x classes) by `net` (default:
        the engine's), in grid order; NaN for near-blank patches."""
        probabilities = np.full((len(grid), len(self.exported.preprocessing.class_names)), np.nan, np.float32)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not self.show_progress, transient=True) as progress:
            task = progress.add_task(f"Mapping {grid.slide.name}", total=len(grid))
            for batch, scores in self.scores(((batch.patches, batch) for batch in self.loader(grid)), net):
                probabilities[batch.indices.numpy()] = scores
                progress.advance(task, batch.read)
        return probabilities

    def scores(self, batches: Iterable[tuple[torch.Tensor, Tag]], net: Engine | None = None) -> Iterator[tuple[Tag, np.ndarray]]:
        """Each batch's class probabilities by `net` (default: the engine's) with its tag, in the
        order given: `net.concurrent_batches` batches are computed at once while the next are read."""
        net = self.net if net is None else net
        classes = len(self.exported.preprocessing.class_names)

        def score(patches: torch.Tensor) -> np.ndarray:
            if not len(patches):  # every patch of the batch near-blank
                return np.zeros((0, classes), np.float32)
            with torch.inference_mode():  # per thread, as inference mode is
                return net(patches.to(self.device, non_blocking=True)).float().cpu().numpy()

        with ThreadPoolExecutor(net.concurrent_batches, thread_name_prefix="engine") as pool:
            in_flight: deque[tuple[Tag, Future[np.ndarray]]] = deque()
            for patches, tag in batches:
                in_flight.append((tag, pool.submit(score, patches)))
                if len(in_flight) > net.concurrent_batches:  # one more waits, to start the moment one ends
                    done, future = in_flight.popleft()
                    yield done, future.result()
            for done, future in in_flight:
                yield done, future.result()

    def loader(self, grid: SlideGrid) -> DataLoader[tuple[torch.Tensor, int]]:
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
