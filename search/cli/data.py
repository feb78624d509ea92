"""`nar data ...`: synthetic TIL patches and whole slides, and a look at a patch source."""

from __future__ import annotations

from pathlib import Path

import typer

from nar_search.data.difficulty import SYNTHETIC_MPP, DifficultyName
from nar_search.data.fractions import TEST_FRACTION, VAL_FRACTION
from nar_search.search.cli.console import console
from nar_search.search.cli.data_options import Exclude, Positive, SlidePattern

data_app = typer.Typer(help="Make synthetic TIL patches and whole slides; inspect patch sources.", no_args_is_help=True)


@data_app.command("synth-patches")
def synth_patches(
    out: Path = typer.Option(..., help="Folder to write til-positive/, til-negative/ and manifest.csv into."),
    n: int = typer.Option(1000, min=1, help="Number of patches (half of them TIL-positive)."),
    seed: int = typer.Option(0, help="Same seed, same patches."),
    difficulty: DifficultyName = typer.Option("default", help="How alike the classes look."),
    mpp: float = typer.Option(SYNTHETIC_MPP, min=0.05, help="Microns per pixel: 50 µm patches of 50/mpp pixels."),
    label_noise: float = typer.Option(0.0, min=0.0, max=0.5, help="Fraction of labels flipped."),
    slides: int | None = typer.Option(None, min=1, help="Synthetic slides the patches come from (default: n/40, at least 4)."),
) -> None:
    """Render synthetic H&E patches labelled TIL-positive (2+ lymphocytes) or negative."""
    from nar_search.data.synth_patches import write_patches

    manifest = write_patches(out, n, seed, difficulty, mpp, label_noise, slides)
    console.print(f"Wrote {n} patches and {manifest}", soft_wrap=True)


@data_app.command("synth-slide")
def synth_slide(
    out: Path = typer.Option(
        ...,
        help="Slide to write (.tiff); its ground truth goes into <slide folder>-truth/, "
        "so that the slide folder holds slides only (as WSInfer needs).",
    ),
    mpp: float = typer.Option(SYNTHETIC_MPP, min=0.05, help="Microns per level-0 pixel."),
    width: int = typer.Option(4096, min=64, help="Level-0 width in pixels."),
    height: int = typer.Option(3072, min=64, help="Level-0 height in pixels."),
    seed: int = typer.Option(0),
    tile: int = typer.Option(512, min=16, help="TIFF tile side, a multiple of 16."),
    aperio: bool = typer.Option(False, help="Describe the slide like an Aperio scanner does (AppMag, MPP)."),
) -> None:
    """Render a pyramidal whole slide with tissue and TIL-rich regions, plus its ground-truth mask."""
    from nar_search.data.synth_slide import truth_paths, write_synthetic_slide

    levels = write_synthetic_slide(out, width=width, height=height, mpp=mpp, seed=seed, tile=tile, aperio=aperio)
    mask, sidecar = truth_paths(out)
    console.print(f"Wrote {out} ({levels} levels), {mask} and {sidecar}", soft_wrap=True)


@data_app.command("inspect")
def inspect(
    source: Path = typer.Argument(..., help="Class folders, a label file (.txt), a manifest or a slide-coordinates CSV."),
    mpp: float | None = typer.Option(None, min=0.05, help="Microns per pixel of slides that do not record it."),
    positive: Positive = None,
    exclude: Exclude = None,
    slide_pattern: SlidePattern = None,
    seed: int = typer.Option(0),
    val_fraction: float = typer.Option(VAL_FRACTION),
    test_fraction: float = typer.Option(TEST_FRACTION),
) -> None:
    """Check a patch source and show how it would be split: the task, patches per split, class
    and slide, and what would make the splits' AUCs doubtful."""
    import numpy as np
    from rich.markup import escape

    from nar_search.data.errors import DataError
    from nar_search.data.sources import SourceOptions, open_patch_source
    from nar_search.data.splits import (
        check_splits,
        class_table,
        slide_table,
        split_findings,
        split_patches,
        summarise_splits,
        summary_table,
    )

    options = SourceOptions(mpp=mpp, positive=tuple(positive or ()), exclude=tuple(exclude or ()), slide_pattern=slide_pattern)
    dataset = open_patch_source(source, options)
    console.print(f"{dataset.description}: {len(dataset)} patches", soft_wrap=True)
    if task := options.task():
        console.print(f"task: {escape(task)}", soft_wrap=True, highlight=False)
    try:
        splits = split_patches(dataset, val_fraction, test_fraction, seed)
    except DataError:
        # The counts show what to add before the refusal says so.
        everything = {"all": np.arange(len(dataset))}
        console.print(summary_table(summarise_splits(dataset, everything), title="Patches (not split)"))
        if dataset.classes is not None:
            console.print(class_table(dataset, everything))
        if dataset.slides is not None:
            console.print(slide_table(dataset))
        raise
    summaries = summarise_splits(dataset, splits)
    console.print(summary_table(summaries))
    if dataset.classes is not None:
        console.print(class_table(dataset, splits))
    if dataset.slides is not None:
        console.print(slide_table(dataset, splits))
    for finding in split_findings(dataset, splits):
        console.print(f"[bold yellow]warning:[/] {escape(finding.message)}", highlight=False, soft_wrap=True)
    check_splits(summaries, {"val": val_fraction, "test": test_fraction})
