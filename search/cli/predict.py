"""`nar predict`: an exported network run over whole slides as TIL maps (nar_search.prediction);
this module only reads the options and reports each slide."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from nar_search.search.cli.console import console, errors

MODEL_CACHE = ".models"  # in --out: the exports of models:/ models, by model id


def predict_command(
    slides: Annotated[list[str], typer.Argument(help="slide files, folders of slides or glob patterns")],
    model: Annotated[
        str,
        typer.Option(
            help="export folder written by `nar export`, or an MLflow model: models:/NAME/VERSION, models:/NAME@ALIAS "
            "(nar export --register) or models:/MODEL_ID (a trained candidate), exported once into --out/.models/"
        ),
    ],
    out: Annotated[Path, typer.Option(help="output folder: one sub-folder of TIL maps per slide, and slides.csv")],
    mpp: Annotated[
        float | None, typer.Option(help="µm per level-0 pixel: needed for slides that record none, and used instead of what others record")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    workers: Annotated[int | None, typer.Option(min=0, help="DataLoader workers reading patches [default: 1 on CPU, more on GPU]")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    engine: Annotated[
        str,
        typer.Option(
            help="auto (the fastest engine that makes float32's calls, measured on the first slide), torch, onnx, "
            "or onnx-int8 (INT8, calibrated on each slide)"
        ),
    ] = "auto",
    calibration: Annotated[
        Path | None, typer.Option(help="folder of tissue patches to calibrate onnx-int8 on, instead of each slide")
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="map part K of N (from 1) of the sorted slides, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="map slides again that --out holds maps of, replacing only these maps' files")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI of a models:/ --model (default: the local store)")] = None,
) -> None:
    """TIL maps of whole slides: Stony Brook text, CSV, QuPath GeoJSON, heat map and summary per slide,
    and a table of every slide. Slides this model has mapped in --out are skipped."""
    from nar_search.prediction.engine_choice import EngineChoice
    from nar_search.prediction.run import PredictionRun, SlideFailed

    run = PredictionRun.start(
        slides,
        _export_folder(model, out, tracking_uri),
        out,
        mpp=mpp,
        batch_size=batch_size,
        workers=workers,
        device=device,
        engine=engine,
        calibration=calibration,
        shard=shard,
        overwrite=overwrite,
    )
    if run.shard.count > 1:
        console.print(f"shard {run.shard.index} of {run.shard.count}: {len(run.slides)} of {run.found} slides")
    if run.plan.skipped:
        console.print(f"skipped {len(run.plan.skipped)} slides this model has mapped in {out} before (--overwrite maps them again)")
    for result in run.map():
        if isinstance(result, EngineChoice):
            console.print(f"engine: {result.reason}", highlight=False, soft_wrap=True)
            continue
        if isinstance(result, SlideFailed):
            errors.print(f"[bold red]error:[/] {result.message}", highlight=False, soft_wrap=True)
            continue
        summary = result.summary
        console.print(
            f"{result.slide.name}: {summary['tissue_patches']} tissue patches, {summary['til_positive_fraction']:.1%} TIL-positive, "
            f"{summary['patches_per_second']:.0f} patches/s -> {result.folder}"
        )
        if warning := result.int8_warning:
            console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    console.print(
        f"{run.mapped} mapped, {len(run.plan.skipped)} skipped, {len(run.failed)} failed of {len(run.slides)} slides: {run.table.path}"
    )
    if run.failed:
        console.print(f"failed: {', '.join(p.name for p in run.failed)}")
        raise typer.Exit(2)


def _export_folder(model: str, out: Path, tracking_uri: str | None) -> Path | Callable[[], Path]:
    """The export folder `model` names or, for an MLflow model, what exports it into
    --out/.models/MODEL_ID once every option is checked and --out made (later runs there reuse
    it); the model is looked up first, before anything is made."""
    if not model.startswith("models:/"):
        return Path(model)
    from nar_search.search.model_source import cached_export, find_logged_model

    source = find_logged_model(model, tracking_uri)

    def export() -> Path:
        folder = out / MODEL_CACHE / source.model_id
        reused = folder.is_dir()
        cached_export(source, folder.parent)
        console.print(f"model: {model} ({source.model_id}), {'exported before' if reused else 'exported'} in {folder}", highlight=False)
        return folder

    return export
