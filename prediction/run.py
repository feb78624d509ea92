"""Runs of nar predict over many slides: which slides, into which output folder. Runs resume
(complete maps by the same model are skipped), split into shards for array jobs, and list
every slide in a table."""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, cast

from openslide import OpenSlideError

from nar_search.data.errors import DataError
from nar_search.data.slides import SLIDE_FIX, SLIDE_SUFFIXES
from nar_search.data.sources import PATCH_UM
from nar_search.models.export import load_export
from nar_search.prediction.engine_choice import AGREEMENT_NEEDED, EngineChoice
from nar_search.prediction.engines import INT8_CACHE, INT8_ENGINE
from nar_search.prediction.outputs import SUMMARY_FILE, output_names, write_outputs
from nar_search.prediction.predictor import SlidePredictor
from nar_search.prediction.staging import put_in_place

INT8_AGREEMENT = AGREEMENT_NEEDED  # share of float32's calls that INT8 should keep; below it the run says so
INT8_SLOWER = 0.9  # INT8's speed as a share of float32's below which the run says so: clear of timing noise
RUN_COLUMNS = ("slide", "patches", "tissue_patches", "til_positive_fraction", "seconds", "status", "reason")


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
    within 1e-3; INT8 only agrees with them at the threshold. Engine auto, before it has chosen,
    takes float maps and those auto made, INT8 too (they agree with float32 as auto requires)."""
    if made.get("sha256") is None or made.get("sha256") != model["sha256"]:
        return False
    if model["engine"] == "auto":
        return made.get("engine") != INT8_ENGINE or "engine_choice" in made
    return (made.get("engine") == INT8_ENGINE) == (model["engine"] == INT8_ENGINE)


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
        elif (summary := finished_map(folder, slide.stem)) and same_model(cast(Mapping[str, object], summary["model"]), model):
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
    """The table of slides mapped into --out, at `path`: RUN_COLUMNS, one row per slide, status
    mapped, skipped or failed (with the reason). It keeps the rows of earlier runs into the same
    --out: one per slide name, as --out holds one map per name, the latest run's. Created on
    construction and rewritten whole after every row, through a staged file, so that a run cut
    short leaves a readable table of what it did. Each shard writes a table of its own
    (Shard.table_name): array jobs share --out, often on a network filesystem where file locks
    are unreliable, and separate files need none."""

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        ours = _is_run_table(path)
        if os.path.lexists(path) and not ours and not (overwrite and path.is_file()):
            raise DataError(f"{path} exists and is not nar predict's table of slides: move it, or pass --overwrite to replace a file")
        self.path = path
        self.rows: dict[str, list[object]] = {}  # by slide name
        if ours:
            with path.open(newline="") as file:
                earlier = list(csv.reader(file))[1:]
            self.rows = {Path(row[0]).stem: list(row) for row in earlier if len(row) == len(RUN_COLUMNS)}
        self.write()

    def add(self, slide: Path, status: str, summary: Mapping[str, object] | None = None, reason: str = "") -> None:
        numbers = [summary[column] for column in RUN_COLUMNS[1:5]] if summary else [""] * 4
        self.rows[slide.stem] = [str(slide), *numbers, status, reason]
        self.write()

    def write(self) -> None:
        def rows(staged: Path) -> None:
            with staged.open("w", newline="") as file:
                csv.writer(file).writerows([RUN_COLUMNS, *self.rows.values()])

        put_in_place(self.path, rows)


def _is_run_table(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open(errors="replace") as file:
        return file.readline().strip() == ",".join(RUN_COLUMNS)


@dataclass(frozen=True)
class SlideMapped:
    """A slide of the run, mapped."""

    slide: Path
    folder: Path  # where its TIL map was written
    summary: dict[str, object]
    int8: Mapping[str, object] | None  # the INT8 engine's calibration and agreement with float32

    @property
    def int8_warning(self) -> str | None:
        """What to tell the user when INT8 kept too few of float32's calls on its calibration
        patches (INT8_AGREEMENT), or ran slower than float32 on them: maps the user would not
        want unawares, or a slower run for nothing."""
        if not self.int8:
            return None
        agreement, speed = cast(float, self.int8["agreement"]), cast(float, self.int8.get("speed_vs_float32", 1.0))
        problems = []
        if agreement < INT8_AGREEMENT:
            problems.append(f"makes float32's call for only {agreement:.1%} of them (below {INT8_AGREEMENT:.1%})")
        if speed < INT8_SLOWER:
            problems.append(f"ran at {speed:.2f}x float32's speed on them")
        if not problems:
            return None
        chosen_by_auto = "engine_choice" in cast(Mapping[str, object], self.summary["model"])
        advice = "" if chosen_by_auto else "--engine auto, which takes INT8 only where it is faster and agrees, or "
        return (
            f"{self.slide.name}: INT8 {' and '.join(problems)} ({self.int8['calibration_patches']} calibration patches): "
            f"use {advice}--engine onnx for float32 maps"
        )


@dataclass(frozen=True)
class SlideFailed:
    """A slide of the run that could not be mapped, and why."""

    slide: Path
    reason: str

    @property
    def message(self) -> str:
        """The reason, naming the slide if it does not already."""
        return self.reason if str(self.slide) in self.reason else f"{self.slide}: {self.reason}"


@dataclass
class PredictionRun:
    """A run of nar predict: this shard's slides, planned against what --out holds, mapped one
    after the other by `map`, each listed in the run table as it goes."""

    predictor: SlidePredictor
    out: Path
    mpp: float | None
    shard: Shard
    found: int  # slides found, over every shard
    slides: list[Path]  # this shard's
    plan: RunPlan
    table: RunTable
    failed: list[Path] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        slides: Sequence[str],
        model: Path | Callable[[], Path],
        out: Path,
        *,
        mpp: float | None = None,
        batch_size: int = 64,
        workers: int | None = None,
        device: str = "auto",
        engine: str = "auto",
        calibration: Path | None = None,
        shard: str | None = None,
        overwrite: bool = False,
    ) -> PredictionRun:
        """Check the options and --out and load the model before any slide is read, so that a
        mistake costs seconds, not hours; then list the slides this model has mapped in --out
        before as skipped. `shard`: K/N (Shard.parse). `model`: an export folder, or what makes
        one once --out is checked and made (a model fetched into --out)."""
        if mpp is not None and not 0 < mpp <= PATCH_UM:
            raise DataError(
                f"--mpp {mpp:g} is no slide resolution: give the µm per level-0 pixel, above 0 and at most {PATCH_UM:g} "
                f"(so that a {PATCH_UM:g} µm patch spans a pixel), e.g. 0.25 at 40x or 0.5 at 20x"
            )
        part = Shard.parse(shard) if shard else Shard()
        every = find_slides(slides)
        paths = part.of(every)
        made = not out.exists()
        prepare_output(out, overwrite)
        try:
            folder = model() if callable(model) else model
            predictor = SlidePredictor(
                load_export(folder), batch_size, workers, device, engine=engine, calibration=calibration, cache=out / INT8_CACHE
            )
        except BaseException:
            if made:  # a refused model leaves no --out behind: this run made it, and all it holds
                shutil.rmtree(out, ignore_errors=True)
            raise
        plan = plan_run(paths, out, predictor.model, overwrite)
        table = RunTable(out / part.table_name, overwrite)
        for path, summary in plan.skipped:
            table.add(path, "skipped", summary, "mapped by this model before")
        return cls(predictor, out, mpp, part, len(every), paths, plan, table)

    @property
    def mapped(self) -> int:
        return len(self.plan.to_map) - len(self.failed)

    def map(self) -> Iterator[SlideMapped | SlideFailed | EngineChoice]:
        """Map the planned slides, yielding each as it is done, and --engine auto's choice when
        made (on the first slide that can be read): a slide that cannot be read fails alone, and
        the run goes on."""
        chosen = self.predictor.asked != "auto"
        for path in self.plan.to_map:
            try:
                tiled = self.predictor.tile(path, self.mpp)
                if not chosen:
                    yield self.predictor.choose_engine(tiled.grid)
                    chosen = True
                prediction = self.predictor.predict_tiled(tiled)
            except (DataError, OpenSlideError) as error:
                self.failed.append(path)
                reason = _cause(error) if isinstance(error, DataError) else _unreadable(path, error)
                self.table.add(path, "failed", reason=reason)
                yield SlideFailed(path, reason)
                continue
            folder = write_outputs(prediction, self.out)
            summary = prediction.summary()
            self.table.add(path, "mapped", summary)
            yield SlideMapped(path, folder, summary, prediction.int8)


def _cause(error: Exception) -> str:
    # An error raised in a DataLoader worker arrives wrapped in its traceback; the cause is its
    # last line, after the exception's name.
    return re.sub(r"^[\w.]+Error: ", "", str(error).strip().splitlines()[-1])


def _unreadable(slide: Path, error: OpenSlideError) -> str:
    """A slide that opened but whose pixels OpenSlide could not decode: a damaged file."""
    return f"{slide} is corrupt or unreadable: OpenSlide failed to decode its pixels ({_cause(error)}); {SLIDE_FIX}"
