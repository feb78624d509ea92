"""The `nar` command line. Sub-commands live in their own modules; this one wires them up
and turns user errors into one clear line and a non-zero exit.

Importing the CLI loads none of torch, Lightning, MLflow or Optuna (tests/test_cli_startup.py):
sub-command modules import them inside the commands that use them, so that `--help` answers at
once and a command pays only for the libraries it needs."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import NoReturn

from nar_search.search.cli.openmp import let_openmp_threads_sleep

if sys.argv[1:2] == ["predict"]:
    let_openmp_threads_sleep()  # before the command imports torch

import typer
from rich.markup import escape

from nar_search.data.errors import DataError
from nar_search.lightning_modules.errors import TrainingError
from nar_search.models.errors import ModelError
from nar_search.search.cli.console import errors
from nar_search.search.cli.dashboard import dashboard_command
from nar_search.search.cli.data import data_app
from nar_search.search.cli.demo import demo_command
from nar_search.search.cli.export import export_command
from nar_search.search.cli.predict import predict_command
from nar_search.search.cli.reduce import reduce_command
from nar_search.search.cli.study import study_app
from nar_search.search.cli.train import train_command
from nar_search.search.errors import StudyConfigError

app = typer.Typer(
    name="nar",
    help="NAR Search: find cheaper CNNs for histopathology patches by Network Auto-Reduction.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("reduce")(reduce_command)
app.command("train")(train_command)
app.command("export")(export_command)
app.command("predict")(predict_command)
app.add_typer(data_app, name="data")
app.add_typer(study_app, name="study")
app.command("dashboard")(dashboard_command)
app.command("demo")(demo_command)

USER_ERRORS: tuple[type[Exception], ...] = (ModelError, DataError, TrainingError, StudyConfigError)


def _quiet_libraries() -> None:
    # Progress bars and our own lines tell the user what happens; library chatter does not.
    # Optuna, Lightning, MLflow and alembic bring their own log handlers and set their loggers'
    # levels when they load, inside the commands: so their INFO lines are disabled as a whole.
    logging.disable(logging.INFO)
    # A trial stopped by Ctrl-C or SIGTERM is reported in one line, not with Optuna's traceback.
    logging.getLogger("optuna.study._optimize").addFilter(
        lambda record: not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))
    )
    warnings.filterwarnings("ignore", message=".*(LeafSpec|litlogger|does not have many workers|non-writable tensors).*")
    # MLflow prints a "View run … at" line on stdout for each run it ends on a tracking server:
    # between a study's progress lines, one per trial, and the runs are linked from the front.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def main(argv: list[str] | None = None) -> None:
    _quiet_libraries()
    try:
        code = app(args=argv, prog_name="nar", standalone_mode=False)
    except typer.TyperException as error:  # click's errors, as Typer raises them from the click it carries
        context = getattr(error, "ctx", None)  # a usage error (missing, unknown, out of range) knows its command
        if type(error).__name__ == "NoArgsIsHelpError":  # `nar study` alone: Typer has shown its help
            sys.exit(2)
        hint = f": see `{context.command_path} --help`" if context is not None else ""
        _error(f"{error.format_message().rstrip('.')}{hint}", getattr(error, "exit_code", 2))
    except typer.Abort:  # end of input at a prompt
        _error("aborted", 1)
    except USER_ERRORS as error:
        _error(str(error))
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str, code: int = 2) -> NoReturn:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)
