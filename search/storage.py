"""Where a study lives: SQLite (embedded, one worker), a journal file (several workers on
one host) or PostgreSQL (many machines, with heartbeats so a dead worker's trial is retried)."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.exc import SQLAlchemyError

from search.config import StudyConfigError
from search.tracking import hide_password

JOURNAL_PREFIX = "journal:"
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 90


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def check_parallel(url: str, workers: int) -> None:
    if workers > 1 and is_sqlite(url):
        raise StudyConfigError(
            f"{workers} parallel workers on SQLite ({url}) would fail with 'database is locked': "
            "use storage journal:studies/NAME.journal (one machine) or a postgresql:// URL, or --workers 1"
        )


def open_storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url.removeprefix(JOURNAL_PREFIX))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")  # psycopg 3, not psycopg2
    try:
        if is_sqlite(url):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            return RDBStorage(url)
        return RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
            engine_kwargs={"pool_pre_ping": True},
        )
    except (SQLAlchemyError, ImportError, ValueError) as error:
        reason = str(error).splitlines()[0][:200]
        raise StudyConfigError(f"cannot open study storage {hide_password(url)}: {reason}") from None
