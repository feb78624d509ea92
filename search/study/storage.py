"""Where a study lives: SQLite (embedded, one worker), a journal file (several workers on
one host) or PostgreSQL (many machines, with heartbeats so a dead worker's trial is retried)."""

from __future__ import annotations

import random
import time

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

from nar_search.search.errors import StudyConfigError
from nar_search.search.locations import JOURNAL_PREFIX, check_storage_url, local_file
from nar_search.search.study.recovery import requeue
from nar_search.search.urls import hide_password

HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 90
SCHEMA_ATTEMPTS = 5


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def check_parallel(url: str, workers: int) -> None:
    if workers > 1 and is_sqlite(url):
        raise StudyConfigError(
            f"{workers} parallel workers on SQLite ({url}) would fail with 'database is locked': "
            "use storage journal:studies/NAME.journal (one machine) or a postgresql:// URL, or --workers 1"
        )


def open_storage(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """The storage at `url`; without `create`, a SQLite or journal file that does not exist is
    refused rather than made (read-only commands create nothing)."""
    path = local_file(url)
    if path is not None and not create and not path.exists():
        raise StudyConfigError(f"no study storage at {path}: run it first with `nar study run STUDY.yaml`, or give --storage")
    check_storage_url(url)
    if url.startswith(JOURNAL_PREFIX) and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")  # psycopg 3, not psycopg2
    if is_sqlite(url) and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            if is_sqlite(url):
                return RDBStorage(url)
            return RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=requeue,
                engine_kwargs={"pool_pre_ping": True},
            )
        except (SQLAlchemyError, ImportError, ValueError) as error:
            # Workers that open a new database together each create Optuna's tables; all but
            # one collide (a unique violation in PostgreSQL's catalogue, or a table or type made
            # meanwhile) and find them made on a retry.
            made_meanwhile = isinstance(error, IntegrityError) or (isinstance(error, ProgrammingError) and "already exists" in str(error))
            if not made_meanwhile:
                raise _unopenable(url, str(error).splitlines()[0][:200]) from None
            time.sleep(random.uniform(0.2, 1.0) * (attempt + 1))
    raise _unopenable(url, "its tables could not be made; run again")


def _unopenable(url: str, reason: str) -> StudyConfigError:
    if "no password supplied" in reason or "password authentication failed" in reason:
        reason += ": give the password in PGPASSWORD or ~/.pgpass (a study URL leaves it out)"
    return StudyConfigError(f"cannot open study storage {hide_password(url)}: {reason}")
