"""`nar study ...`: run, join, inspect and choose from studies."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nar_search.search.cli.console import console
from nar_search.search.cli.data_options import Exclude, Positive, SlidePattern
from nar_search.search.errors import StudyConfigError
from nar_search.search.interrupts import Interrupted, exit_code, interruptible, signal_name
from nar_search.search.study.lookup import (
    load_study,
    locate_study,
    open_named_study,
    quiet_optuna,
    recorded_config,
    run_again,
    study_tracking_uri,
)
from nar_search.search.urls import hide_password, without_password

if TYPE_CHECKING:
    import optuna

    from nar_search.models.base_network import BaseNetwork
    from nar_search.search.config import StudyConfig
    from nar_search.search.front import pareto
    from nar_search.search.study.record import SeedRecord
    from nar_search.search.study.runner import StudyRunner
    from nar_search.search.study.workers import DeadWorker

study_app = typer.Typer(help="Run, join and inspect NAR studies.", no_args_is_help=True)

# Patches read from slides are read at the network's side; any side checks the source.
DATA_CHECK_SIDE = 32
ConfigFile = Annotated[Path | None, typer.Argument(help="study YAML file (see configs/)")]
KeepLocal = Annotated[bool, typer.Option("--keep-local", help="keep each candidate's network in runs/NAME/ once its MLflow run holds it")]


def _config(
    path: Path | None,
    name: str | None = None,
    model: str | None = None,
    data: Path | None = None,
    trials: int | None = None,
    sampler: str | None = None,
    methods: str | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    workers: int | None = None,
    epochs: int | None = None,
    input_size: int | None = None,
    positive: list[str] | None = None,
    exclude: list[str] | None = None,
    slide_pattern: str | None = None,
    confirm_seeds: int | None = None,
    confirm_max_auc_drop: float | None = None,
    keep_local: bool = False,
) -> StudyConfig:
    from nar_search.search.config import load_study_config

    config = load_study_config(
        path,
        {
            "name": name,
            "model": model,
            "data.source": str(data) if data else None,
            "n_trials": trials,
            "sampler": sampler,
            "storage": storage,
            "tracking_uri": tracking_uri,
            "workers": workers,
            "training.epochs": epochs,
            "input_size": input_size,
            "data.positive": positive or None,
            "data.exclude": exclude or None,
            "data.slide_pattern": slide_pattern,
            "confirm.seeds": confirm_seeds,
            "confirm.max_auc_drop": confirm_max_auc_drop,
            "keep_local": keep_local or None,
        },
    )
    if methods:
        config = config.with_methods([name.strip() for name in methods.split(",")])
    return _checked(config)


def _checked(config: StudyConfig) -> StudyConfig:
    """The study's data, storage and tracking store checked before anything is made."""
    if not config.data.source.exists():
        raise StudyConfigError(f"data source {config.data.source} not found: make it with `nar data synth-patches` or fix data.source")
    from nar_search.search.locations import check_storage_url, check_tracking_uri
    from nar_search.search.tracking import default_tracking_uri

    check_storage_url(config.storage_url)  # before the study, its run or a folder is made
    check_tracking_uri(config.tracking_uri or default_tracking_uri())
    from nar_search.search.training_run import DataSettings

    # Read and split as every trial will, before a study or a run exists: a task option that
    # does not fit the source is one line now, not a failed trial each.
    datamodule = DataSettings(**config.data.model_dump()).datamodule(
        config.input_size or DATA_CHECK_SIDE, config.training.to_training_config()
    )
    datamodule.setup()
    splits = ", ".join(
        f"{s.name} {s.patches} ({s.per_class[1]} positive{f', {s.slides} slides' if s.slides else ''})" for s in datamodule.summary()
    )
    console.print(f"data: {escape(str(config.data.source))}: {splits}", soft_wrap=True, highlight=False)
    return config


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=console,
    )


@study_app.command("run")
def run_command(
    config_file: ConfigFile = None,
    name: Annotated[str | None, typer.Option(help="study name")] = None,
    model: Annotated[str | None, typer.Option()] = None,
    data: Annotated[Path | None, typer.Option(help="patch source")] = None,
    trials: Annotated[int | None, typer.Option(help="total trials (a resumed study runs only the rest)")] = None,
    sampler: Annotated[str | None, typer.Option(help="grid, random, tpe, nsga2, gp")] = None,
    methods: Annotated[
        str | None, typer.Option(help="methods searched, e.g. nar,ir (each with its settings in the study file, or its defaults)")
    ] = None,
    storage: Annotated[str | None, typer.Option(help="sqlite:///…, journal:PATH or postgresql://…")] = None,
    tracking_uri: Annotated[str | None, typer.Option()] = None,
    workers: Annotated[int | None, typer.Option(help="parallel local workers (journal or PostgreSQL storage)")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    input_size: Annotated[int | None, typer.Option()] = None,
    positive: Positive = None,
    exclude: Exclude = None,
    slide_pattern: SlidePattern = None,
    keep_local: KeepLocal = False,
) -> None:
    """Run (or resume) a study until it holds its number of trials, confirm its front, then print
    it. Writes, in the working folder unless the study file says otherwise: studies/NAME.db (the
    storage), runs/NAME/ (the base it trains; each candidate's network only until its MLflow run
    holds it, unless --keep-local) and mlflow/store/ (the MLflow store)."""
    from nar_search.search.study.opening import given_base
    from nar_search.search.study.recovery import recover, unresolved_failures
    from nar_search.search.study.runner import StudyRunner
    from nar_search.search.study.status import counted, trial_line
    from nar_search.search.tracking import Tracker

    quiet_optuna()
    config = _config(
        config_file,
        name,
        model,
        data,
        trials,
        sampler,
        methods,
        storage,
        tracking_uri,
        workers,
        epochs,
        input_size,
        positive,
        exclude,
        slide_pattern,
        keep_local=keep_local,
    )
    base = given_base(config)  # checked before the study exists: a base that does not fit writes nothing
    with _held(config, base) as study:
        runner = StudyRunner(config, study, Tracker(config.tracking_uri), base=base)
        runner.start()
        if recovery := str(recover(study, runner.tracker)):
            console.print(f"resuming: {recovery}")
        done = f"{counted(study)}/{config.n_trials} trials done"
        console.print(f"study [bold]{config.name}[/] in {hide_password(config.storage_url)}: {done}")
        try:
            with interruptible():
                if config.workers > 1:
                    _run_workers(config, runner)
                else:
                    with _progress() as progress:
                        task = progress.add_task(config.name, total=config.n_trials, completed=counted(study), last="")
                        runner.optimize([lambda s, t: progress.update(task, completed=_shown(s, config), last=trial_line(t))])
                runner.settle()  # the trials of workers that joined from elsewhere, or died
                if not (failures := unresolved_failures(study)):
                    _confirm(runner)
        except Exception:  # a confirmation that cannot go on (e.g. its study file changed): said in one line
            runner.tracker.client.set_terminated(runner.parent_run_id, "FAILED")
            raise
        except (KeyboardInterrupt, Interrupted) as stop:
            recover(study, runner.tracker, requeue_failed=False, stopping=True)  # what a stop mid-trial left running
            runner.tracker.client.set_terminated(runner.parent_run_id, "KILLED")
            console.print(
                f"[yellow]interrupted[/] ({signal_name(stop)}): the running trials are marked failed and their "
                "MLflow runs KILLED; run the same command to resume"
            )
            raise typer.Exit(exit_code(stop)) from None
        runner.publish()
        if failures:
            runner.tracker.client.set_terminated(runner.parent_run_id, "FAILED")
            console.print(
                f"[red]{len(failures)} trial(s) failed[/] ({', '.join(map(str, failures))}): their MLflow runs say why "
                "(tag failure_reason); run the same command to retry them"
            )
            raise typer.Exit(1)
        runner.tracker.client.set_terminated(runner.parent_run_id, "FINISHED")
        _print_front(study, config.name)
        _report_infeasible_draws(study, config)
    dashboard = ["nar", "dashboard", *_naming(config_file, name, storage, tracking_uri)]
    _hint(f"dashboard: {shlex.join(dashboard)} (MLflow experiment {config.name!r})")


@contextmanager
def _held(config: StudyConfig, base: BaseNetwork | None) -> Iterator[optuna.Study]:
    """The study, opened for this command alone: its storage file (SQLite or journal) is held
    while the command runs, so that a second `nar study run` of it stops instead of training
    beside it; workers join through `nar study worker`, which holds nothing. A storage file
    that exists is held before the study is opened, one about to be made once it is made."""
    from nar_search.search.exclusive import exclusive
    from nar_search.search.locations import local_file
    from nar_search.search.study.opening import open_study

    path = local_file(config.storage_url)
    fix = "wait for it to end, or add workers with `nar study worker` on journal or PostgreSQL storage"
    with ExitStack() as held:
        if existed := path is not None and path.exists():
            held.enter_context(exclusive(path, "the study storage", fix))
        study = open_study(config, base)
        if path is not None and not existed:
            held.enter_context(exclusive(path, "the study storage", fix))
        yield study


def _settled(runner: StudyRunner) -> bool:
    """Whether the study is ready to end once no trial runs anywhere: no failure left unretried."""
    from optuna.trial import TrialState

    from nar_search.search.study.recovery import unresolved_failures

    if runner.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        console.print("waiting for the trials that other workers run (a dead worker's are retried here)")
    runner.settle()
    if failures := unresolved_failures(runner.study):
        console.print(f"[red]{len(failures)} trial(s) failed[/] ({', '.join(map(str, failures))}): run a worker again to retry them")
        return False
    return True


def _confirm(runner: StudyRunner) -> None:
    """The front's points trained again over the study's seeds, with progress."""
    confirmation = runner.confirmation()
    if not confirmation.pending():
        confirmation.run()  # nothing to train: the study is marked confirmed all the same
        return
    seeds = runner.config.confirm.seeds
    with _progress() as progress:
        task = progress.add_task(f"confirming the front over {seeds} seeds", total=len(confirmation.pending()), last="")

        def shown(seed: SeedRecord) -> None:
            done = progress.tasks[task].completed + 1
            line = f"trial {seed.trial} seed {seed.seed}: AUC {seed.val_auc:.3f}"
            progress.update(task, completed=done, total=done + len(confirmation.pending()), last=line)

        confirmation.run(shown)


def _report_infeasible_draws(study: optuna.Study, config: StudyConfig) -> None:
    from nar_search.search.study.runner import out_of_draws
    from nar_search.search.study.status import counted, infeasible_draws

    if not (draws := infeasible_draws(study)):
        return
    if out_of_draws(study, config.n_trials):
        console.print(
            f"[yellow]stopped short[/] at {counted(study)}/{config.n_trials} trials: {draws} draws gave no network "
            "(γ < 1, an input below the minimum, or over the GFLOPs budget); narrow search.phi or the methods' ranges "
            "(search.methods.nar.alpha, beta), "
            "or raise gflops_budget"
        )
    else:
        console.print(f"{draws} infeasible draw(s) trained nothing and did not count as trials")


def _shown(study: optuna.Study, config: StudyConfig) -> int:
    from nar_search.search.study.status import counted

    # Parallel workers may finish one trial more than asked for: progress counts what was asked.
    return min(counted(study), config.n_trials)


def _run_workers(config: StudyConfig, runner: StudyRunner) -> None:
    """N worker processes on one storage; this process shows progress, fails and queues again
    the trial of a worker that dies, and runs what no worker is left to run."""
    from nar_search.search.study.status import trial_line
    from nar_search.search.study.workers import Workers

    study = runner.study
    with Workers(config) as workers, _progress() as progress:
        task = progress.add_task(f"{config.name} · {config.workers} workers", total=config.n_trials, last="")
        workers.watch(study, runner.tracker, lambda: progress.update(task, completed=_shown(study, config)), _report_dead_worker)
        runner.optimize([lambda s, t: progress.update(task, completed=_shown(s, config), last=trial_line(t))])


def _report_dead_worker(dead: DeadWorker) -> None:
    outcome = str(dead.recovery) or "no trial of its was left running"
    console.print(f"[yellow]a worker died[/] (pid {dead.pid}, {dead.how}; log {dead.log}: {dead.last_line!r}): {outcome}")


@study_app.command("worker")
def worker_command(
    config_file: ConfigFile = None,
    storage: Annotated[
        str | None, typer.Option(help="the study's storage URL (journal or PostgreSQL); alone, it joins with the study's recorded settings")
    ] = None,
    name: Annotated[str | None, typer.Option(help="the study, where the storage holds several")] = None,
    tracking_uri: Annotated[str | None, typer.Option()] = None,
    recover_: Annotated[
        bool, typer.Option("--recover/--no-recover", help="first fail and queue again the trials of workers that are gone")
    ] = True,
    finish: Annotated[
        bool,
        typer.Option(
            "--finish/--no-finish",
            help="when no trial is left: wait for the other workers' trials (retrying those of workers that died), "
            "confirm the front with them, publish it and end the study's run",
        ),
    ] = True,
    keep_local: KeepLocal = False,
) -> None:
    """Join an existing study (from this or another machine) and run trials until it is done:
    with its YAML file, or with only --storage, then with the settings the study recorded (its
    data and base must be at the same paths here: a shared folder).
    Writes its networks to runs/NAME/ in the working folder (each candidate's until its MLflow run
    holds it, unless --keep-local), and its runs to the study's MLflow
    store (mlflow/store/ there, unless the study file names another)."""
    from nar_search.search.study.opening import given_base, open_study
    from nar_search.search.study.recovery import end_orphaned_parent, recover
    from nar_search.search.study.runner import StudyRunner
    from nar_search.search.tracking import Tracker

    quiet_optuna()
    if config_file is None and storage is not None:
        config = _checked(recorded_config(storage, name, tracking_uri).model_copy(update={"keep_local": keep_local}))
    else:
        config = _config(config_file, name, storage=storage, tracking_uri=tracking_uri, workers=1, keep_local=keep_local)
    base = given_base(config)
    study = open_study(config, base)
    runner = StudyRunner(config, study, Tracker(config.tracking_uri), base=base)
    if recover_ and (recovery := str(recover(study, runner.tracker))):
        console.print(f"resuming: {recovery}")
    try:
        with interruptible():
            runner.optimize()
            if finish and _settled(runner):
                _confirm(runner)
                runner.finish()
                return
    except (KeyboardInterrupt, Interrupted) as stop:
        recover(study, runner.tracker, requeue_failed=False, stopping=True)
        console.print(f"[yellow]interrupted[/] ({signal_name(stop)}): the running trial is marked failed; run a worker again to resume")
        raise typer.Exit(exit_code(stop)) from None
    if end_orphaned_parent(study, runner.tracker):
        console.print(
            "the study's parent run was left RUNNING by a stopped `nar study run`: ended KILLED; run it again to confirm and publish"
        )
    if finish:  # it could not finish the study: some trial failed and waits for a retry
        raise typer.Exit(1)


@study_app.command("confirm")
def confirm_command(
    config_file: Annotated[Path, typer.Argument(help="the study's YAML file (its data and training)")],
    seeds: Annotated[int | None, typer.Option(min=1, help="seeds per front point in all, its trial's own among them")] = None,
    max_auc_drop: Annotated[float | None, typer.Option(min=0, help="only points whose val AUC is within this of the baseline's")] = None,
) -> None:
    """Train the front's points again over more seeds (what a study does when it ends), then
    print the confirmed front: mean ± sd over each point's seeds. Writes the networks to
    runs/NAME/ in the working folder, and their runs to the study's MLflow store."""
    from nar_search.search.study.opening import given_base
    from nar_search.search.study.runner import StudyRunner
    from nar_search.search.study.storage import open_storage
    from nar_search.search.tracking import Tracker

    quiet_optuna()
    config = _config(config_file, workers=1, confirm_seeds=seeds, confirm_max_auc_drop=max_auc_drop)
    study = open_named_study(config.name, open_storage(config.storage_url, create=False), config.storage_url, config_file)
    base = given_base(config)
    runner = StudyRunner(config, study, Tracker(config.tracking_uri), base=base)
    runner.start()
    try:
        with interruptible():
            _confirm(runner)
    except Exception:
        runner.tracker.client.set_terminated(runner.parent_run_id, "FAILED")
        raise
    except (KeyboardInterrupt, Interrupted) as stop:
        runner.tracker.client.set_terminated(runner.parent_run_id, "KILLED")
        console.print(f"[yellow]interrupted[/] ({signal_name(stop)}): the seed in training is dropped; run the same command to resume")
        raise typer.Exit(exit_code(stop)) from None
    runner.publish()
    runner.tracker.client.set_terminated(runner.parent_run_id, "FINISHED")
    _print_front(study, config.name)


def _naming(
    config_file: Path | None,
    name: str | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    name_flag: str = "--name",
) -> list[str]:
    """The arguments that name a study (and its tracking URI) as the user named them, for a
    command printed as a hint; passwords left out."""
    return (
        ([str(config_file)] if config_file else [])
        + ([name_flag, name] if name else [])
        + (["--storage", without_password(storage)] if storage else [])
        + (["--tracking-uri", without_password(tracking_uri)] if tracking_uri else [])
    )


def _hint(line: str) -> None:
    # Never wrapped, nor read as markup: a command in it must run as printed once copied.
    console.print(escape(line), soft_wrap=True, highlight=False)


Name = Annotated[str | None, typer.Option(help="study name (instead of a YAML file)")]
Storage = Annotated[str | None, typer.Option(help="storage URL (default sqlite:///studies/NAME.db)")]


@study_app.command("status")
def status_command(config_file: ConfigFile = None, name: Name = None, storage: Storage = None) -> None:
    """Trials done, running, failed, pruned; the best so far."""
    from nar_search.search.study.record import TrialRecord
    from nar_search.search.study.status import study_status

    _, study = load_study(config_file, name, storage)
    status = study_status(study)
    table = Table(title=f"study {study.study_name}", show_header=False)
    for state, count in status.states.items():
        table.add_row(state, str(count))
    if status.lost:
        table.add_row("worker gone", str(status.lost))
    if status.infeasible:
        table.add_row("infeasible draws", f"{status.infeasible} (nothing trained; not counted as trials)")
    if status.best:
        best = TrialRecord.of(status.best)
        table.add_row("best val AUC", f"{best.val_auc:.4f} (trial {status.best.number}, {best.gflops:.3f} GFLOPs)")
    if status.baseline:
        reference = TrialRecord.of(status.baseline)
        table.add_row("baseline", f"AUC {reference.val_auc:.4f} at {reference.gflops:.3f} GFLOPs")
    if status.confirm_seeds:
        table.add_row(
            "confirmed front",
            f"{status.confirmed} point(s) over {status.confirm_seeds} seeds ({status.seeds_trained} seed(s) trained by confirmation)",
        )
    if status.rungs:
        table.add_row("rungs reached", " · ".join(f"{n} at {e} epoch{'s' if e > 1 else ''}" for e, n in status.rungs.items()))
    for line in status.running:
        table.add_row("running", line)
    console.print(table)
    if status.lost:
        _hint(f"the trials of workers that are gone are marked failed and queued again by: {run_again(config_file)}")


def _fmt(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _off_front(row: pareto.TrialRow) -> str:
    if row.stopped_at_rung:
        return f" ‖{row.stopped_at_rung}"
    return "" if row.pareto else " ·"


def _print_front(study: optuna.Study, name: str, every_trial: bool = False) -> None:
    from nar_search.search.front import pareto

    title = f"{'Trials' if every_trial else 'Pareto front'} of {name}: val AUC vs GFLOPs"
    rows = pareto.pareto_rows(study, every_trial)
    over_seeds = any(row.seeds > 1 for row in rows)
    table = Table(title=title)
    headers = ["trial", "method", "α/β/γ", "ϕ or ε", "input", "GFLOPs", "fewer GFLOPs", "val AUC", "test AUC"]
    for header in headers + (["seeds", "val mean ± sd", "test mean ± sd"] if over_seeds else []):
        table.add_column(header, justify="right")
    for row in rows:
        coefficients = "/".join(f"{v:.3g}" for v in (row.alpha, row.beta, row.gamma)) if row.alpha else "–"
        knob = f"ε {row.flops_target:g}" if row.flops_target is not None else _fmt(row.phi, 2)
        marks = f"{'*' if row.baseline else ''}{'✓' if row.confirmed_front else ''}{_off_front(row) if every_trial else ''}"
        cells = [
            f"{row.trial}{marks}",
            row.method,
            coefficients,
            knob,
            str(row.input_size),
            _fmt(row.gflops),
            f"{row.reduction:.2f}×",
            _fmt(row.val_auc, 4),
            _fmt(row.test_auc, 4),
        ]
        if over_seeds:
            cells += [str(row.seeds), _mean_sd(row.mean_val_auc, row.val_auc_sd), _mean_sd(row.mean_test_auc, row.test_auc_sd)]
        table.add_row(*cells)
    notes = ["fewer GFLOPs: the baseline's ÷ the trial's", "val and test AUC: the trial's own training"]
    if any(row.baseline for row in rows):
        notes.insert(0, "* the baseline (ϕ = 0)")
    if any(row.flops_target is not None for row in rows):
        notes.append("ε: ResRep's FLOPs target")
    caption = "; ".join(notes)
    if any(row.confirmed for row in rows):
        caption += "; ✓ on the confirmed front (by mean val AUC over each point's seeds)"
    if every_trial:
        caption += "; · not on the front; ‖N stopped at the N-epoch rung (its val AUC there)"
    table.caption = caption
    console.print(table)


def _mean_sd(mean: float | None, sd: float | None) -> str:
    return "–" if mean is None else f"{mean:.4f} ± {sd or 0.0:.4f}"


@study_app.command("pareto")
def pareto_command(
    config_file: ConfigFile = None,
    name: Name = None,
    storage: Storage = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the front as JSON")] = False,
    every_trial: Annotated[bool, typer.Option("--all", help="every trained trial, the front marked")] = False,
) -> None:
    """The Pareto front: trial, method, α, β, γ, ϕ, input side, GFLOPs, reduction, val and test AUC."""
    from nar_search.search.front import pareto

    _, study = load_study(config_file, name, storage)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in pareto.pareto_rows(study, every_trial)], indent=2))
    else:
        _print_front(study, study.study_name, every_trial)


@study_app.command("select")
def select_command(
    config_file: ConfigFile = None,
    name: Name = None,
    storage: Storage = None,
    max_auc_drop: Annotated[float, typer.Option(min=0, help="largest val AUC loss against the baseline")] = 0.005,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="print it as JSON, with its study, storage and tracking URI: what `nar export --selection` reads (passwords left out)",
        ),
    ] = False,
) -> None:
    """The cheapest trial whose val AUC is within --max-auc-drop of the baseline's: of the
    confirmed points, by their mean over seeds, once the study is confirmed."""
    from nar_search.search.front import pareto
    from nar_search.search.study.record import TrialRecord, recorded
    from nar_search.search.study.storage import open_storage

    quiet_optuna()
    config, study_name, url = locate_study(config_file, name, storage)
    study = open_named_study(study_name, open_storage(url, create=False), url, config_file)
    chosen, reference = pareto.select(study, max_auc_drop), pareto.baseline(study)
    if chosen is None or reference is None:
        raise StudyConfigError(f"study {study.study_name} has no trained baseline yet: run it first")
    if as_json:
        from nar_search.search.locations import absolute

        # Locations as absolute paths: the file is read from wherever the export runs.
        tracking = absolute(study_tracking_uri(config, study))
        where = {"study": study_name, "storage": without_password(absolute(url)), "tracking_uri": without_password(tracking)}
        typer.echo(json.dumps(chosen.as_dict() | where, indent=2))
        return
    out = Path("exports") / f"{study_name}-trial{chosen.trial}"
    export = ["nar", "export", *_naming(config_file, name, storage, name_flag="--study"), "--trial", str(chosen.trial), "--out", str(out)]
    if chosen.confirmed and chosen.seeds > 1:
        figures = (
            f"confirmed over {chosen.seeds} seeds: val AUC {_mean_sd(chosen.mean_val_auc, chosen.val_auc_sd)}, "
            f"test AUC {_mean_sd(chosen.mean_test_auc, chosen.test_auc_sd)}"
        )
    else:
        figures = f"val AUC {chosen.val_auc:.4f}, test AUC {chosen.test_auc:.4f}"
        if not chosen.confirmed:
            figures += " (one seed: `nar study confirm` trains the front again over more seeds)"
    base_auc = recorded(TrialRecord.of(reference).val_auc)
    console.print(
        f"the cheapest trial whose val AUC is within {max_auc_drop:g} of the baseline's {base_auc:.4f} "
        f"(at least {base_auc - max_auc_drop:.4f}{', by the mean over its seeds' if chosen.confirmed and chosen.seeds > 1 else ''}):"
    )
    console.print(
        f"trial [bold]{chosen.trial}[/] ({chosen.method}): {chosen.gflops:.3f} GFLOPs, {chosen.reduction:.2f}× cheaper, "
        f"{figures}; MLflow run {chosen.mlflow_run_id}"
    )
    _hint(f"export it: {shlex.join(export)}")
