"""`nar dashboard`: the MLflow UI of a study's runs, or optuna-dashboard on its trials, served
on 127.0.0.1 until stopped, their servers stopped with them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nar_search.search.cli.console import console
from nar_search.search.cli.study import Name, Storage
from nar_search.search.errors import StudyConfigError
from nar_search.search.interrupts import Interrupted, interruptible, signal_name
from nar_search.search.study.lookup import load_study, locate_study, open_named_study, quiet_optuna, study_tracking_uri
from nar_search.search.urls import hide_password

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

LOCALHOST = "127.0.0.1"  # the dashboards serve this machine only: reach them from elsewhere through an SSH tunnel
STOP_SECONDS = 15  # a server's grace to end on SIGTERM before it is killed
FRONT_PLOT_ID = "nar-pareto-front"  # the study's plot in optuna-dashboard: saved again under it, it is replaced
NOTE_SIGNATURE = "*Written by `nar dashboard --optuna` as it starts: delete this line, and the note is yours to keep.*"


def dashboard_command(
    config_file: Annotated[Path | None, typer.Argument(help="study YAML file: its tracking URI (with --optuna, its storage)")] = None,
    name: Name = None,
    storage: Storage = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI to serve (default: the study's, else the local store)")
    ] = None,
    optuna_: Annotated[bool, typer.Option("--optuna", help="optuna-dashboard on the study's storage instead of the MLflow UI")] = False,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help=f"port on {LOCALHOST} (default: 5000; 8080 with --optuna)")] = None,
) -> None:
    """The MLflow UI of a study's runs (or with --optuna, optuna-dashboard on its trials) on 127.0.0.1,
    until Ctrl-C or SIGTERM, which stop its server too.

    Without a study or --tracking-uri: the local MLflow store, $NAR_MLFLOW_HOME/store
    (NAR_MLFLOW_HOME is ./mlflow unless set), where studies and `nar train` track their runs
    when they name no tracking URI.

    A study is named as for `nar study status`: its YAML file, or --name (and --storage); the
    MLflow UI then serves the tracking URI the study was run with.
    """
    if optuna_:
        if tracking_uri:
            raise StudyConfigError("--tracking-uri is for the MLflow UI: optuna-dashboard reads the study's storage; drop one of them")
        _serve_optuna(config_file, name, storage, port or 8080)
        return
    if tracking_uri is None and (config_file or name):
        config, study = load_study(config_file, name, storage)
        tracking_uri = study_tracking_uri(config, study)
    _serve_mlflow(tracking_uri, port or 5000)


def _serve_mlflow(tracking_uri: str | None, port: int) -> None:
    from nar_search.search.locations import local_file
    from nar_search.search.tracking import UI_VIEW, artifact_root, default_tracking_uri

    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        console.print(f"the runs are tracked by the MLflow server at {hide_password(tracking_uri)}: open it there")
        return
    _check_free(port)
    command = [sys.executable, "-m", "mlflow", "server", "--host", LOCALHOST, "--port", str(port), "--workers", "1"]
    tracking_uri = tracking_uri or default_tracking_uri()
    if (store := local_file(tracking_uri)) is not None:
        if not store.is_file():  # a dashboard only reads: it makes no empty store to show
            raise StudyConfigError(f"no MLflow store at {store}: run a study or `nar train` first, or fix --tracking-uri")
        command += ["--artifacts-destination", str(artifact_root(store))]
    # The store's URL goes by the environment, not the command line, where `ps` would show its password.
    environment = os.environ | {"MLFLOW_BACKEND_STORE_URI": tracking_uri}
    # MLflow's GenAI job runners: seven processes and half the start-up time for features no NAR run uses.
    environment.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    console.print(f"MLflow UI for {hide_password(tracking_uri)} at [bold]http://{LOCALHOST}:{port}/#/{UI_VIEW}[/] (Ctrl-C stops it)")
    server = subprocess.Popen(command, env=environment, start_new_session=True)  # a group of its own, stopped as one
    try:
        with interruptible():
            code = server.wait()
    except (KeyboardInterrupt, Interrupted) as stop:
        console.print(f"MLflow UI stopped ({signal_name(stop)})")
        return
    finally:
        _stop_group(server)
    console.print(f"[red]the MLflow server ended[/] (exit {code}): its lines above say why")
    raise typer.Exit(1)


def _stop_group(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (its uvicorn workers too), SIGKILL to what is left
    of it after a grace; a second Ctrl-C meanwhile is ignored, as it would leave them running."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        for signum in (signal.SIGTERM, signal.SIGKILL):
            with suppress(ProcessLookupError):
                os.killpg(server.pid, signum)
            deadline = time.monotonic() + STOP_SECONDS
            while _group_alive(server) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _group_alive(server):
                return
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _group_alive(server: subprocess.Popen[bytes]) -> bool:
    server.poll()  # reaps the leader, which as a zombie would still count
    try:
        os.killpg(server.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _serve_optuna(config_file: Path | None, name: str | None, storage: str | None, port: int) -> None:
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna_dashboard

    from nar_search.search.study.opening import OBJECTIVE_NAMES
    from nar_search.search.study.storage import open_storage

    class Server(ThreadingMixIn, WSGIServer):  # the dashboard's page makes requests in parallel
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass  # a line per request would bury what this command says

    quiet_optuna()
    _, study_name, url = locate_study(config_file, name, storage)
    backend = open_storage(url, create=False)
    study = open_named_study(study_name, backend, url, config_file)
    if study.metric_names is None:  # a study made before its objectives were named
        study.set_metric_names(list(OBJECTIVE_NAMES[: len(study.directions)]))
    _check_free(port)
    show_front(study)
    server = make_server(LOCALHOST, port, optuna_dashboard.wsgi(backend), server_class=Server, handler_class=QuietHandler)
    console.print(
        f"optuna-dashboard for study {study_name} in {hide_password(url)} at [bold]http://{LOCALHOST}:{port}[/] (Ctrl-C stops it)"
    )
    try:
        with interruptible():
            server.serve_forever()
    except (KeyboardInterrupt, Interrupted) as stop:
        console.print(f"optuna-dashboard stopped ({signal_name(stop)})")
    finally:
        server.server_close()


class _PlotlyJson:
    """A figure as `optuna_dashboard.save_plotly_graph_object` reads one: by its `to_json()`
    alone, so that its JSON, made without Plotly, needs no Plotly installed."""

    def __init__(self, figure: dict[str, Any]) -> None:
        self.figure = figure

    def to_json(self) -> str:
        return json.dumps(self.figure)


def show_front(study: optuna.Study) -> None:
    """What optuna-dashboard shows of the front as the MLflow views show it. Its own Pareto Front
    plot, atop the study's page, puts the first objective, val_auc, across (its Objective X menu,
    which forgets the choice on reload, is the only way to swap its axes) and marks no baseline.
    So the study gets a plot of its own, which optuna-dashboard draws further down that page:
    GFLOPs across, the baseline starred and named, as of the dashboard's start; and a note (the
    study's Note page) naming the baseline and the menu, unless a user wrote the note: theirs is
    kept."""
    import optuna_dashboard

    from nar_search.search.front import pareto
    from nar_search.search.front.plots import pareto_plotly
    from nar_search.search.study.record import StudyRecord

    if StudyRecord.of(study).config is None:  # not made by `nar study run`: its trials hold no record to draw
        return
    rows = [row.as_dict() for row in pareto.pareto_rows(study, every_trial=True)]
    title = f"{study.study_name}: val AUC vs GFLOPs ({len(rows)} trained, as the dashboard started)"
    figure = pareto_plotly(rows, [row for row in rows if row["pareto"]], title)
    optuna_dashboard.save_plotly_graph_object(study, _PlotlyJson(figure), graph_object_id=FRONT_PLOT_ID)
    note, current = _note(study, pareto.baseline(study)), optuna_dashboard.get_note(study)
    if current != note and (not current or NOTE_SIGNATURE in current):
        optuna_dashboard.save_note(study, note)


def _note(study: optuna.Study, baseline: FrozenTrial | None) -> str:
    named = (
        f"**Trial {baseline.number} is the baseline** (ϕ = 0): the network unreduced, the reference of every trial's GFLOPs and AUC."
        if baseline
        else "The baseline (ϕ = 0) is not trained yet."
    )
    menu = (
        " The Pareto Front plot atop it puts val_auc across: choose gflops as its Objective X for the same axes."
        if len(study.directions) == 2
        else ""
    )
    drawn = "The plot *val AUC vs GFLOPs* on the study's page draws GFLOPs across (log) and stars the baseline, as the MLflow views do."
    return f"{named}\n\n{drawn}{menu}\n\n{NOTE_SIGNATURE}"


def _check_free(port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: a port in TIME_WAIT is free
        try:
            probe.bind((LOCALHOST, port))
        except OSError:
            raise StudyConfigError(f"port {port} on {LOCALHOST} is in use: pick another with --port") from None
