"""A study named as the read-only commands name it (its YAML file, or its name and storage):
located, opened without creating anything, and where its runs are tracked."""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from nar_search.search.errors import StudyConfigError
from nar_search.search.study.record import StudyRecord
from nar_search.search.urls import hide_password, without_password

if TYPE_CHECKING:  # Optuna and pydantic load with the commands that open a study, not with the CLI
    import optuna

    from nar_search.search.config import StudyConfig


def quiet_optuna() -> None:
    # Optuna's ExperimentalWarnings (heartbeats, retried trials, some samplers) give a user
    # nothing to act on. Their class comes with Optuna, so they are filtered where studies load it.
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def run_again(config_file: Path | None) -> str:
    """The command that runs (or resumes) the study."""
    # A study named by --name has no file to name here: its YAML file is the user's.
    return shlex.join(["nar", "study", "run", str(config_file) if config_file else "STUDY.yaml"])


def locate_study(config_file: Path | None, name: str | None, storage: str | None) -> tuple[StudyConfig | None, str, str]:
    """The study's config (from its YAML file, if given), name and storage URL."""
    if config_file is not None:
        from nar_search.search.config import load_study_config

        config = load_study_config(config_file, {"name": name, "storage": storage})
        return config, config.name, config.storage_url
    if name is not None:
        return None, name, storage or f"sqlite:///studies/{name}.db"
    raise StudyConfigError("name the study: give its YAML file or --name (and --storage if not the default)")


def open_named_study(name: str, storage: optuna.storages.BaseStorage, url: str, config_file: Path | None) -> optuna.Study:
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StudyConfigError(f"no study {name!r} in {hide_password(url)}: run it first with `{run_again(config_file)}`") from None


def load_study(config_file: Path | None, name: str | None, storage: str | None) -> tuple[StudyConfig | None, optuna.Study]:
    from nar_search.search.study.storage import open_storage

    quiet_optuna()
    config, name, url = locate_study(config_file, name, storage)
    return config, open_named_study(name, open_storage(url, create=False), url, config_file)


def study_tracking_uri(config: StudyConfig | None, study: optuna.Study) -> str:
    """Where the study's runs are tracked: as its file says, else as the study recorded it
    (there with its password masked, so left out), else the local MLflow store."""
    from nar_search.search.tracking import default_tracking_uri

    if config is not None:
        return config.tracking_uri or default_tracking_uri()
    recorded = (StudyRecord.of(study).config or {}).get("tracking_uri")
    return without_password(recorded) if recorded else default_tracking_uri()


def recorded_config(url: str, name: str | None, tracking_uri: str | None) -> StudyConfig:
    """The settings that the study in storage `url` (named `name`, or the only one there)
    recorded when it was made: all that a worker given nothing but the storage's address needs.
    Passwords were left out of them; the clients read theirs where they keep them."""
    import optuna

    from nar_search.search.config import load_study_config
    from nar_search.search.study.storage import open_storage

    storage = open_storage(url, create=False)
    if name is None:
        names = optuna.study.get_all_study_names(storage)
        if len(names) != 1:
            listed = f" ({', '.join(names[:5])})" if names else ""
            raise StudyConfigError(f"{hide_password(url)} holds {len(names)} studies{listed}: name one with --name, or give its YAML file")
        name = names[0]
    study = open_named_study(name, storage, url, None)
    settings = StudyRecord.of(study).config
    if settings is None:
        raise StudyConfigError(f"study {name!r} recorded no settings (an older study): join it with its YAML file")
    recorded_uri = settings.get("tracking_uri")
    joined = settings | {
        "storage": url,
        "tracking_uri": tracking_uri or (without_password(recorded_uri) if recorded_uri else None),
        "workers": 1,
    }
    return load_study_config(None, joined)
