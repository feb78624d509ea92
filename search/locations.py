"""Where a study's storage and its MLflow store live, checked before anything is made there: a
file that a folder should be, a folder that is not writable, a scheme nothing reads, or (for the
commands that only read) a store that is not there. Each is one line that says what to give."""

from __future__ import annotations

import os
from pathlib import Path

from nar_search.search.errors import StudyConfigError
from nar_search.search.urls import hide_password

JOURNAL_PREFIX = "journal:"
# Tracking stores MLflow reaches over the network: nothing to check here without reaching them.
SERVER_TIMEOUT = 10  # seconds a tracking server may take to answer the check
REMOTE_TRACKING = ("http", "https", "databricks", "databricks-uc", "postgresql", "mysql", "mssql")


def local_file(url: str) -> Path | None:
    """The file a journal or SQLite URL names (relative to the working folder unless absolute)."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url.removeprefix(JOURNAL_PREFIX))
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


def absolute(url: str) -> str:
    """The URL with its local file's path made absolute, so that it names the same file from any folder."""
    path = local_file(url)
    if path is None or path.is_absolute():
        return url
    return f"{JOURNAL_PREFIX}{path.resolve()}" if url.startswith(JOURNAL_PREFIX) else f"sqlite:///{path.resolve()}"


def check_creatable(path: Path, what: str, fix: str) -> None:
    """`path` is a file, or a file can be made there: its nearest existing folder is a folder
    that this process may write in."""
    if path.exists():
        if path.is_dir():
            raise StudyConfigError(f"{what} {path} is a folder, not a file: {fix}")
        return
    folder = next(parent for parent in path.parents if parent.exists())
    if not folder.is_dir():
        raise StudyConfigError(f"cannot make {what} {path}: {folder} is a file, not a folder: {fix}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StudyConfigError(f"cannot make {what} {path}: {folder} is not writable: {fix}")


def check_tracking_uri(uri: str, create: bool = True) -> None:
    """An MLflow tracking URI that works here: a SQLite store that exists (or, with `create`,
    can be made), or a server or database that MLflow reaches."""
    scheme = uri.split(":", 1)[0].split("+")[0].lower() if ":" in uri else ""
    if scheme in ("http", "https"):
        _reach_server(uri)
        return
    if scheme in REMOTE_TRACKING:
        return
    fix = "give --tracking-uri (or tracking_uri:) as sqlite:///PATH/mlflow.db, http(s)://HOST or postgresql://…"
    if scheme in ("file", ""):
        raise StudyConfigError(f"tracking URI {uri}: MLflow's file store is retired: {fix}")
    path = local_file(uri)
    if scheme != "sqlite" or path is None:
        raise StudyConfigError(f"tracking URI {hide_password(uri)}: MLflow reads no {scheme!r} store: {fix}")
    if not create and not path.is_file():
        raise StudyConfigError(f"no MLflow store at {path}: give the --tracking-uri that the runs were recorded in")
    check_creatable(path, "the MLflow store", fix)


def _reach_server(uri: str) -> None:
    """A tracking server that answers, and takes this process's credentials: MLflow's own
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN), read
    from the environment by MLflow as every later call reads them, never from a file of ours."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    shown = hide_password(uri)
    try:
        response = http_request(  # type: ignore[no-untyped-call]  # unannotated in MLflow
            get_default_host_creds(uri),  # type: ignore[no-untyped-call]
            "/api/2.0/mlflow/experiments/search",
            "GET",
            max_retries=0,
            timeout=SERVER_TIMEOUT,
            raise_on_status=False,
            params={"max_results": 1},
        )
    except Exception:  # refused, unresolved, timed out: requests' and MLflow's errors alike
        raise StudyConfigError(f"cannot reach the MLflow tracking server at {shown}: start it, or fix the tracking URI") from None
    if response.status_code == 401:
        raise StudyConfigError(
            f"the MLflow tracking server at {shown} refused the credentials (401): set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) to an account of that server"
        )
    if response.status_code == 403:
        raise StudyConfigError(f"the MLflow tracking server at {shown} denies this account (403): ask its admin for permission")
    if response.status_code != 200:
        raise StudyConfigError(f"{shown} answered {response.status_code} where an MLflow tracking server answers: check the tracking URI")


def check_storage_url(url: str) -> None:
    """A study storage whose local file exists or can be made (PostgreSQL is checked by connecting)."""
    path = local_file(url)
    if path is not None:
        check_creatable(path, "the study storage", "give another storage (journal:PATH, sqlite:///PATH or postgresql://…)")
