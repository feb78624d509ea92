"""`nar export` and `nar predict`: a chosen network out of a study into a model folder (and
optionally the MLflow Model Registry), and that folder run over whole slides as TIL maps."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nar_search.data.errors import DataError
from nar_search.models.errors import ModelError
from nar_search.models.spec import ArchSpec, spec_from_json
from nar_search.search.console import console, errors
from nar_search.search.errors import StudyConfigError
from nar_search.search.study_cli import load_study, study_tracking_uri
from nar_search.search.urls import hide_password

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelSource:
    """An MLflow run holding a trained network (spec.json, model.safetensors) and, when known,
    the study trial it answers."""

    run_id: str
    tracking_uri: str
    study: str | None = None
    trial: int | None = None

    def describe(self) -> str:
        names = ([f"study {self.study}"] if self.study else []) + ([f"trial {self.trial}"] if self.trial is not None else [])
        return " ".join([*names, f"(MLflow run {self.run_id})"])


def find_source(
    config_file: Path | None = None,
    study: str | None = None,
    trial: int | None = None,
    storage: str | None = None,
    run_id: str | None = None,
    selection: Path | None = None,
    tracking_uri: str | None = None,
) -> ModelSource:
    """The run named by exactly one of: a study (YAML or name) and trial, a run id, or the
    JSON that `nar study select --json` prints."""
    from nar_search.search.tracking import Tracker

    given = [name for name, value in (("a study", config_file or study), ("--run-id", run_id), ("--selection", selection)) if value]
    if len(given) != 1:
        raise StudyConfigError(
            f"name one model source, not {' and '.join(given) or 'none'}: a study YAML or --study with --trial, --run-id, or --selection"
        )
    if run_id:
        return ModelSource(run_id, Tracker(tracking_uri).tracking_uri)
    if selection:
        return _selected(selection, tracking_uri)
    return _study_trial(config_file, study, trial, storage, tracking_uri)


def _selected(path: Path, tracking_uri: str | None) -> ModelSource:
    """The selection's run, in the tracking URI it names (--tracking-uri first): the run holds
    the network, so the study's storage, which it names too, need not be reachable from here."""
    from nar_search.search.tracking import Tracker

    try:
        row = json.loads(path.read_text())
        run_id = str(row["mlflow_run_id"])
    except FileNotFoundError:
        raise StudyConfigError(f"selection file {path} not found: write it with `nar study select STUDY.yaml --json > {path}`") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise StudyConfigError(f"{path} is not the JSON of `nar study select --json` (it needs mlflow_run_id)") from None
    uri = Tracker(tracking_uri or row.get("tracking_uri")).tracking_uri
    return ModelSource(run_id, uri, study=row.get("study"), trial=row.get("trial"))


def _study_trial(
    config_file: Path | None, name: str | None, number: int | None, storage: str | None, tracking_uri: str | None
) -> ModelSource:
    if number is None:
        raise StudyConfigError("which trial? add --trial N (`nar study select` names the cheapest good one)")
    config, study = load_study(config_file, name, storage)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise StudyConfigError(f"study {study.study_name} has no trial {number}: it has trials 0 to {len(trials) - 1}")
    attrs = trials[number].user_attrs
    if "reused_from" in attrs:  # the same network, trained by an earlier trial
        attrs = trials[attrs["reused_from"]].user_attrs
    if "mlflow_run_id" not in attrs or "spec" not in attrs or "val_auc" not in attrs:
        state = trials[number].state.name.lower()
        raise StudyConfigError(f"trial {number} of study {study.study_name} holds no trained network ({state}): pick a completed trial")
    return ModelSource(attrs["mlflow_run_id"], tracking_uri or study_tracking_uri(config, study), study.study_name, number)


def fetch_model(source: ModelSource, folder: Path) -> tuple[ArchSpec, nn.Module, dict[str, Any]]:
    """Spec, network and what is known about it (source, AUCs) from the source's run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from nar_search.models.weights import build_with_weights

    client = MlflowClient(tracking_uri=source.tracking_uri)
    try:
        run = client.get_run(source.run_id)
        for name in ("spec.json", "model.safetensors"):
            client.download_artifacts(source.run_id, name, str(folder))
    except (MlflowException, OSError) as error:
        raise ModelError(
            f"cannot fetch the model of {source.describe()} from {hide_password(source.tracking_uri)} "
            f"({_last_line(error)}): check the run id and --tracking-uri"
        ) from None
    spec = spec_from_json((folder / "spec.json").read_text())
    model = build_with_weights(spec, folder / "model.safetensors")
    tags, metrics = run.data.tags, run.data.metrics
    trial = source.trial if source.trial is not None else tags.get("optuna.trial_number")
    about = {
        "source": {
            "study": source.study or tags.get("optuna.study"),
            "trial": None if trial is None else int(trial),
            "mlflow_run_id": source.run_id,
            "tracking_uri": hide_password(source.tracking_uri),
        },
        "val_auc": metrics.get("val_auc"),
        "test_auc": metrics.get("test_auc"),
    }
    return spec, model, about


def register_export(folder: Path, source: ModelSource, name: str, alias: str | None) -> int:
    """Log the export as an ONNX model (its other files beside it) in an `export` child run of
    the source run, register it as a version of `name`, point `alias` at it; returns the version."""
    import numpy as np
    import onnx
    from mlflow.exceptions import MlflowException
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import Schema, TensorSpec

    import mlflow
    from nar_search.models.export import ONNX_FILE, PREPROCESSING_FILE
    from nar_search.search.tracking import PARENT_TAG

    preprocessing = json.loads((folder / PREPROCESSING_FILE).read_text())
    side = preprocessing["input_size"]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, side, side), "input")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(preprocessing["class_names"])), "logits")]),
    )
    client = MlflowClient(tracking_uri=source.tracking_uri)
    mlflow.set_tracking_uri(source.tracking_uri)
    try:
        experiment_id = client.get_run(source.run_id).info.experiment_id
        tags = {"nar.role": "export", PARENT_TAG: source.run_id}
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"export {name}", tags=tags):
            info = mlflow.onnx.log_model(
                onnx.load(str(folder / ONNX_FILE)),
                name="model",
                registered_model_name=name,
                signature=signature,
                extra_files=[str(p) for p in sorted(folder.iterdir()) if p.name != ONNX_FILE],
                metadata={"preprocessing": preprocessing},
                pip_requirements=["onnxruntime", "onnx"],
            )
        version = int(info.registered_model_version)
        if alias:
            client.set_registered_model_alias(name, alias, str(version))
    except MlflowException as error:
        raise ModelError(f"cannot register {name} in {hide_password(source.tracking_uri)}: {error.message.splitlines()[0]}") from None
    return version


def export_command(
    out: Annotated[Path, typer.Option(help="export folder to write")],
    config_file: Annotated[Path | None, typer.Argument(help="study YAML file (or give --study)")] = None,
    study: Annotated[str | None, typer.Option(help="study name")] = None,
    trial: Annotated[int | None, typer.Option(help="trial number in the study")] = None,
    storage: Annotated[str | None, typer.Option(help="study storage URL (default sqlite:///studies/NAME.db)")] = None,
    run_id: Annotated[str | None, typer.Option(help="MLflow run of a trained network (instead of a study trial)")] = None,
    selection: Annotated[Path | None, typer.Option(help="JSON printed by `nar study select --json`")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: the study's, else the local store)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a previous export in --out (never other files)")] = False,
    register: Annotated[str | None, typer.Option(help="also register the model under this name in the MLflow Model Registry")] = None,
    alias: Annotated[str | None, typer.Option(help="registry alias for the new version, e.g. champion")] = None,
) -> None:
    """Export a trained network: safetensors + spec, TorchScript, ONNX, preprocessing and a WSInfer config."""
    from nar_search.lightning_modules.slide_prediction import training_preprocessing
    from nar_search.models.export import export_model

    if alias and not register:
        raise typer.BadParameter("an alias needs --register NAME", param_hint="--alias")
    source = find_source(config_file, study, trial, storage, run_id, selection, tracking_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own line says what was fetched
    with tempfile.TemporaryDirectory() as scratch:
        spec, model, about = fetch_model(source, Path(scratch))
    folder = export_model(model, spec, training_preprocessing(spec), out, about, overwrite)
    console.print(f"exported {source.describe()} ({spec.model_name}, {spec.input_size} px) to [bold]{folder}[/]: formats agree within 1e-4")
    if register:
        version = register_export(folder, source, register, alias)
        console.print(
            f"registered as [bold]{register}[/] version {version}" + (f", alias {alias}: models:/{register}@{alias}" if alias else "")
        )


def predict_command(
    slides: Annotated[list[str], typer.Argument(help="slide files, folders of slides or glob patterns")],
    model: Annotated[Path, typer.Option(help="export folder written by `nar export`")],
    out: Annotated[Path, typer.Option(help="output folder: one sub-folder of TIL maps per slide, and slides.csv")],
    mpp: Annotated[float | None, typer.Option(help="µm per pixel for slides that do not record it")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    workers: Annotated[int | None, typer.Option(min=0, help="DataLoader workers reading patches [default: 1 on CPU, more on GPU]")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    engine: Annotated[
        str, typer.Option(help="auto (onnx on a CPU, torch on a GPU), torch, onnx, or onnx-int8 (INT8, calibrated on each slide)")
    ] = "auto",
    calibration: Annotated[
        Path | None, typer.Option(help="folder of tissue patches to calibrate onnx-int8 on, instead of each slide")
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="map part K of N (from 1) of the sorted slides, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="map slides again that --out holds maps of, replacing only these maps' files")] = False,
) -> None:
    """TIL maps of whole slides: Stony Brook text, CSV, QuPath GeoJSON, heat map and summary per slide,
    and a table of every slide. Slides this model has mapped in --out are skipped."""
    from openslide import OpenSlideError

    from nar_search.data.sources import PATCH_UM
    from nar_search.lightning_modules.slide_prediction import (
        INT8_AGREEMENT,
        INT8_CACHE,
        RunTable,
        Shard,
        SlidePredictor,
        find_slides,
        plan_run,
        prepare_output,
        write_outputs,
    )
    from nar_search.models.export import load_export

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
        predictor = SlidePredictor(
            load_export(model), batch_size, workers, device, engine=engine, calibration=calibration, cache=out / INT8_CACHE
        )
    except BaseException:
        if made:
            out.rmdir()  # a refused model leaves no --out behind; rmdir: only while it is still empty
        raise
    plan = plan_run(paths, out, predictor.model, overwrite)
    table = RunTable(out / part.table_name, overwrite)
    if part.count > 1:
        console.print(f"shard {part.index} of {part.count}: {len(paths)} of {len(every)} slides")
    for path, summary in plan.skipped:
        table.add(path, "skipped", summary, "mapped by this model before")
    if plan.skipped:
        console.print(f"skipped {len(plan.skipped)} slides this model has mapped in {out} before (--overwrite maps them again)")
    failed = []
    for path in plan.to_map:
        try:
            prediction = predictor.predict(path, mpp)
        except (DataError, OpenSlideError) as error:
            failed.append(path)
            table.add(path, "failed", reason=_last_line(error))
            errors.print(f"[bold red]error:[/] {_naming(path, _last_line(error))}", highlight=False, soft_wrap=True)
            continue
        folder = write_outputs(prediction, out)
        summary = prediction.summary()
        table.add(path, "mapped", summary)
        console.print(
            f"{path.name}: {summary['tissue_patches']} tissue patches, {summary['til_positive_fraction']:.1%} TIL-positive, "
            f"{summary['patches_per_second']:.0f} patches/s -> {folder}"
        )
        if prediction.int8 and prediction.int8["agreement"] < INT8_AGREEMENT:
            console.print(
                f"[bold yellow]warning:[/] {path.name}: INT8 makes the same call as float32 for only {prediction.int8['agreement']:.1%} "
                f"of {prediction.int8['calibration_patches']} calibration patches (below {INT8_AGREEMENT:.0%}): "
                "use --engine onnx for float32 maps",
                highlight=False,
                soft_wrap=True,
            )
    mapped = len(plan.to_map) - len(failed)
    console.print(f"{mapped} mapped, {len(plan.skipped)} skipped, {len(failed)} failed of {len(paths)} slides: {table.path}")
    if failed:
        console.print(f"failed: {', '.join(p.name for p in failed)}")
        raise typer.Exit(2)


def _naming(path: Path, message: str) -> str:
    return message if str(path) in message else f"{path}: {message}"


def _last_line(error: Exception) -> str:
    # An error raised in a DataLoader worker arrives wrapped in its traceback; the cause is last.
    return str(error).strip().splitlines()[-1]
