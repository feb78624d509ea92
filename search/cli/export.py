"""`nar export`: a chosen network out of a study into a model folder (and optionally the MLflow
Model Registry)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nar_search.search.cli.console import console
from nar_search.search.model_source import export_source, find_source, register_export


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
    if alias and not register:
        raise typer.BadParameter("an alias needs --register NAME", param_hint="--alias")
    from nar_search.models.export import check_export_target

    check_export_target(out, overwrite)  # before the network is fetched: a wrong --out is said at once
    source = find_source(config_file, study, trial, storage, run_id, selection, tracking_uri)
    folder, spec = export_source(source, out, overwrite)
    console.print(f"exported {source.describe()} ({spec.model_name}, {spec.input_size} px) to [bold]{folder}[/]: formats agree within 1e-4")
    if register:
        version = register_export(folder, source, register, alias)
        console.print(
            f"registered as [bold]{register}[/] version {version}" + (f", alias {alias}: models:/{register}@{alias}" if alias else "")
        )
