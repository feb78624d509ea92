"""`nar train`: one reduced network trained, evaluated and recorded in MLflow."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nar_search.data.fractions import TEST_FRACTION, VAL_FRACTION
from nar_search.lightning_modules.distill_settings import DistillSettings
from nar_search.lightning_modules.errors import TrainingError
from nar_search.lightning_modules.settings import Scheduler, TrainingConfig
from nar_search.models import DEFAULT_MODEL
from nar_search.models.errors import ModelError
from nar_search.search.cli.console import console
from nar_search.search.cli.data_options import Exclude, Positive, SlidePattern
from nar_search.search.cli.method_options import with_method_options
from nar_search.search.methods import METHODS, MethodSettings, get_method, method_help
from nar_search.search.methods.phi import parse_phis
from nar_search.search.urls import hide_password

# px: 10x the side of a 50 µm patch at 20x (100 px); beyond it one batch alone outgrows memory.
MAX_INPUT_SIDE = 1024


@with_method_options(METHODS.values())
def train_command(
    data: Annotated[Path, typer.Option(help="patches: class folders, Stony Brook label file, CSV manifest or slide coordinates CSV")],
    model: Annotated[str, typer.Option(help="timm model name")] = DEFAULT_MODEL,
    input_size: Annotated[int | None, typer.Option(help="base input side in px (default: the model's)")] = None,
    phi: Annotated[str, typer.Option(help="ϕ (0 = the original network)")] = "0",
    method: Annotated[str, typer.Option(help=method_help(METHODS.values()))] = "nar",
    epochs: Annotated[int, typer.Option(min=1)] = TrainingConfig.epochs,
    seeds: Annotated[int, typer.Option(min=1, help="runs averaged (the paper: 3)")] = TrainingConfig.seeds,
    seed: Annotated[int, typer.Option(help="first seed; also fixes the data split")] = TrainingConfig.seed,
    batch_size: Annotated[int, typer.Option(min=1)] = TrainingConfig.batch_size,
    lr: Annotated[float, typer.Option()] = TrainingConfig.lr,
    weight_decay: Annotated[float, typer.Option()] = TrainingConfig.weight_decay,
    scheduler: Annotated[Scheduler, typer.Option()] = TrainingConfig.scheduler,
    patience: Annotated[int, typer.Option(min=0, help="early stopping on val AUC; 0 disables")] = TrainingConfig.patience or 0,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader workers")] = TrainingConfig.num_workers,
    precision: Annotated[str, typer.Option(help="Lightning precision, e.g. 32-true, bf16-mixed")] = TrainingConfig.precision,
    accelerator: Annotated[str, typer.Option(help="auto, cpu, gpu")] = TrainingConfig.accelerator,
    mpp: Annotated[float | None, typer.Option(min=0.05, help="µm/px for slides without MPP")] = None,
    positive: Positive = None,
    exclude: Exclude = None,
    slide_pattern: SlidePattern = None,
    val_fraction: Annotated[float, typer.Option(min=0.01, max=0.99, help="share of the slides held out for validation")] = VAL_FRACTION,
    test_fraction: Annotated[float, typer.Option(min=0.01, max=0.99, help="share of the slides held out for test")] = TEST_FRACTION,
    base: Annotated[
        Path | None,
        typer.Option(help="the trained original (ϕ = 0) network: a folder of `nar train`/`nar export`, or its weights (.safetensors, .pt)"),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="scratch, inherit (the base's first blocks and channels) or inherit-magnitude (its heaviest channels); "
            "default: inherit with --base"
        ),
    ] = None,
    distill_weight: Annotated[
        float | None,
        typer.Option(
            min=0, max=1, help=f"share of the loss learnt from the base as teacher; default: {DistillSettings.weight:g} with --base, else 0"
        ),
    ] = None,
    distill_temperature: Annotated[float, typer.Option(min=0.01, help="softmax temperature of distillation")] = DistillSettings.temperature,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: the local store under mlflow/)")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment")] = "nar-train",
    run_dir: Annotated[Path | None, typer.Option(help="checkpoints and weights (default: runs/<experiment>/<run>)")] = None,
    settings: MethodSettings | None = None,
) -> None:
    """Train one (reduced) network, evaluate AUC on the held-out split, record it in MLflow.
    Writes the network to --run-dir (default runs/EXPERIMENT/RUN/) and, without --tracking-uri,
    its run to mlflow/store/ in the working folder."""
    import torch

    from nar_search.models.base_network import load_base
    from nar_search.models.init_modes import get_init_mode
    from nar_search.models.registry import original_spec
    from nar_search.search.exclusive import exclusive
    from nar_search.search.locations import check_creatable, check_tracking_uri
    from nar_search.search.tracking import Tracker, default_tracking_uri
    from nar_search.search.training_run import DataSettings, train_and_record

    if input_size is not None and input_size > MAX_INPUT_SIDE:
        raise ModelError(
            f"--input-size {input_size} px is too large (50 µm patches are 100 px at 20x): give at most "
            f"{MAX_INPUT_SIDE} px, or leave it out for the model's default"
        )
    if accelerator.lower() in ("gpu", "cuda") and not torch.cuda.is_available():
        raise TrainingError(f"--accelerator {accelerator} asked for but no CUDA GPU is available: use cpu or auto")
    strategy = get_method(method)
    values = parse_phis(phi)
    if len(values) != 1:
        raise typer.BadParameter("train takes a single ϕ; run a study to compare several", param_hint="--phi")
    if settings is None or not settings.is_point():
        raise typer.BadParameter("train takes a single value of each setting; run a study to compare several", param_hint="--method")
    if base is None and ((init and get_init_mode(init).needs_base) or distill_weight):
        raise ModelError("--init inherit and --distill-weight learn from a base network: give --base, or leave them out")
    given = load_base(base, model, input_size) if base else None
    candidate = strategy.candidate(given.spec if given else original_spec(model, input_size), values[0], settings)
    training = strategy.training(candidate)
    weight = (DistillSettings.weight if given else 0.0) if distill_weight is None else distill_weight
    config = TrainingConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        scheduler=scheduler,
        patience=patience or None,
        seeds=seeds,
        seed=seed,
        precision=precision,
        accelerator=accelerator,
        num_workers=workers,
        init=get_init_mode(init or ("inherit" if given else "scratch")).name,
        distill=DistillSettings(weight, distill_temperature) if weight > 0 else None,
    )
    run_name = f"{model}-{strategy.slug(candidate)}"
    if run_dir is not None and run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise TrainingError(f"--run-dir {run_dir} is not a new or empty folder: its files could be overwritten; give another")
    run_dir = run_dir or Path("runs") / experiment / f"{run_name}-{datetime.now():%Y%m%d-%H%M%S}"
    check_creatable(run_dir / "spec.json", "the run folder's files in", "give another --run-dir")
    settings_of_data = DataSettings(data, mpp, val_fraction, test_fraction, tuple(positive or ()), tuple(exclude or ()), slide_pattern)
    settings_of_data.datamodule(training.spec.input_size, config).setup()  # read and split before a run or a folder is made
    check_tracking_uri(tracking_uri or default_tracking_uri())
    run_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(run_dir, "the run folder", "wait for that command to end, or give another --run-dir"):
        tracker = Tracker(tracking_uri)
        outcome = train_and_record(
            tracker,
            experiment,
            run_name,
            training.spec,
            settings_of_data,
            config,
            run_dir,
            callbacks=training.callbacks,
            base=given,
            finalize=training.finalize,
            params={strategy.name: settings.model_dump(mode="json")},
        )
    spec = outcome.spec
    table = Table(title=f"{run_name} · input {spec.input_size} px", show_header=False)
    table.add_row("val AUC", f"{outcome.val_auc:.4f} ± {outcome.val_auc_std:.4f} ({seeds} seed{'s' * (seeds > 1)})")
    table.add_row("test AUC", f"{outcome.test_auc:.4f} ± {outcome.test_auc_std:.4f}")
    table.add_row("GFLOPs", f"{outcome.gflops:.3f}")
    table.add_row("params", f"{outcome.params / 1e6:.2f} M")
    table.add_row("latency", f"{outcome.latency_ms:.2f} ms/patch (batch 8)")
    table.add_row("training", f"{outcome.epochs} epochs in {outcome.seconds:.0f} s (init {config.init}, distill {weight:g})")
    table.add_row("MLflow run", f"{outcome.run_id} at {hide_password(tracker.tracking_uri)}")
    table.add_row("network", f"{run_dir} (spec.json + model.safetensors, usable as --base)")
    console.print(table)
