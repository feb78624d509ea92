"""A trained network's MLflow run, named by a study trial, a run id or the JSON of `nar study
select --json`: found, exported to a model folder, and registered in the MLflow Model Registry."""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from nar_search.models.errors import ModelError
from nar_search.models.spec import ArchSpec, spec_from_json
from nar_search.search.errors import StudyConfigError
from nar_search.search.study.lookup import load_study, study_tracking_uri
from nar_search.search.study.record import TrialRecord
from nar_search.search.urls import hide_password

if TYPE_CHECKING:
    from torch import nn

    from nar_search.search.tracking import Tracker


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
        return ModelSource(run_id, Tracker(tracking_uri, create=False).tracking_uri)
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
    uri = Tracker(tracking_uri or row.get("tracking_uri"), create=False).tracking_uri
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
    reused_from = TrialRecord.of(trials[number]).reused_from
    trained_by = number if reused_from is None else reused_from  # the same network, trained by an earlier trial
    record = TrialRecord.of(trials[trained_by])
    if record.mlflow_run_id is None or record.spec is None or record.val_auc is None:
        state = trials[number].state.name.lower()
        raise StudyConfigError(f"trial {number} of study {study.study_name} holds no trained network ({state}): pick a completed trial")
    return ModelSource(record.mlflow_run_id, tracking_uri or study_tracking_uri(config, study), study.study_name, trained_by)


def fetch_model(source: ModelSource, folder: Path) -> tuple[ArchSpec, nn.Module, dict[str, Any]]:
    """Spec, network and what is known about it (source, AUCs) from the source's run."""
    from mlflow.exceptions import MlflowException

    from nar_search.models.weights import build_with_weights
    from nar_search.search.tracking import Tracker

    tracker = Tracker(source.tracking_uri, create=False)
    try:
        run = tracker.client.get_run(source.run_id)
        tracker.download_network(source.run_id, folder)
    except (MlflowException, OSError) as error:
        raise ModelError(
            f"cannot fetch the model of {source.describe()} from {hide_password(source.tracking_uri)} "
            f"({_last_line(error)}): check the run id and --tracking-uri"
        ) from None
    tags, metrics = run.data.tags, run.data.metrics
    _check_against_run(source, tags)
    spec = spec_from_json((folder / "spec.json").read_text())
    model = build_with_weights(spec, folder / "model.safetensors")
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


def _check_against_run(source: ModelSource, tags: dict[str, str]) -> None:
    """A selection names the study and trial of its run: an export never says other than the run does."""
    recorded = {"study": tags.get("optuna.study"), "trial": tags.get("optuna.trial_number")}
    claimed = {"study": source.study, "trial": None if source.trial is None else str(source.trial)}
    wrong = [name for name, value in claimed.items() if value is not None and value != recorded[name]]
    if wrong:
        said = ", ".join(f"{name} {claimed[name]} (the run's: {recorded[name] or 'none'})" for name in wrong)
        raise ModelError(f"the selection does not match MLflow run {source.run_id}: {said}; write it again with `nar study select --json`")


@dataclass(frozen=True)
class LoggedModelSource:
    """A LoggedModel holding a network, named by a model URI: `models:/NAME/VERSION` or
    `models:/NAME@ALIAS` of the Model Registry (`nar export --register`), or `models:/MODEL_ID`
    of a trained candidate (the Models tab)."""

    uri: str
    model_id: str
    tracking_uri: str


def find_logged_model(uri: str, tracking_uri: str | None) -> LoggedModelSource:
    """The LoggedModel that `uri` names now (an alias may move), or one line saying why not."""
    from mlflow.exceptions import MlflowException

    from nar_search.search.tracking import Tracker

    tracker = Tracker(tracking_uri, create=False)
    try:
        model_id = tracker.client.get_logged_model(_model_id(tracker, uri)).model_id
    except MlflowException as error:
        raise ModelError(
            f"no model {uri} in {hide_password(tracker.tracking_uri)} ({_last_line(error)}): check the name, version or alias "
            "(models:/NAME/VERSION, models:/NAME@ALIAS, models:/MODEL_ID) and --tracking-uri"
        ) from None
    return LoggedModelSource(uri, model_id, tracker.tracking_uri)


def _model_id(tracker: Tracker, uri: str) -> str:
    reference = uri.removeprefix("models:/")
    if reference == uri or not reference:
        raise ModelError(f"{uri} is not a model URI: give models:/NAME/VERSION, models:/NAME@ALIAS or models:/MODEL_ID")
    if "@" in reference:
        version = tracker.client.get_model_version_by_alias(*reference.split("@", 1))
    elif "/" in reference:
        version = tracker.client.get_model_version(*reference.split("/", 1))
    else:
        return reference
    # A SQL registry keeps no model id; the version's source names the LoggedModel it registered.
    model_id = version.model_id or str(version.source).removeprefix("models:/")
    if "/" in model_id or ":" in model_id:
        raise ModelError(f"{uri} was registered from {version.source}, not from a logged model: register it with `nar export --register`")
    return cast(str, model_id)


def fetch_logged_model(source: LoggedModelSource, folder: Path) -> tuple[ArchSpec, nn.Module, dict[str, Any]]:
    """Spec, network (its weights' SHA-256 checked) and what is known about it from a LoggedModel."""
    from mlflow.exceptions import MlflowException

    from nar_search.models.weights import build_with_weights
    from nar_search.search.tracking import Tracker

    tracker = Tracker(source.tracking_uri, create=False)
    try:
        model = tracker.client.get_logged_model(source.model_id)
        tracker.download_model(model, folder)
    except (MlflowException, OSError) as error:
        raise ModelError(f"cannot fetch model {source.uri} from {hide_password(source.tracking_uri)} ({_last_line(error)})") from None
    spec = spec_from_json((folder / "spec.json").read_text())
    about = {
        "source": {
            "model_uri": source.uri,
            "model_id": model.model_id,
            "mlflow_run_id": model.source_run_id,
            "tracking_uri": hide_password(source.tracking_uri),
        },
        **{metric.key: metric.value for metric in model.metrics or [] if metric.key in ("val_auc", "test_auc")},
    }
    return spec, build_with_weights(spec, folder / "model.safetensors"), about


def export_source(source: ModelSource | LoggedModelSource, out: Path, overwrite: bool) -> tuple[Path, ArchSpec]:
    """The network of a study trial or run, or of a LoggedModel, exported to `out` in every format
    (checked to agree); returns the folder and the network's spec."""
    from nar_search.models.export import export_model
    from nar_search.prediction.network import training_preprocessing

    with tempfile.TemporaryDirectory() as scratch:
        if isinstance(source, LoggedModelSource):
            spec, model, about = fetch_logged_model(source, Path(scratch))
        else:
            spec, model, about = fetch_model(source, Path(scratch))
    return export_model(model, spec, training_preprocessing(spec), out, about, overwrite), spec


def cached_export(source: LoggedModelSource, cache: Path) -> Path:
    """The export of a LoggedModel in `cache`/MODEL_ID: made once, so that runs into one place
    name one export (exports of one network differ byte for byte), and shards that made it at
    once take the first one's."""
    folder = cache / source.model_id
    if not folder.is_dir():
        try:
            export_source(source, folder, overwrite=False)
        except BaseException as error:
            if isinstance(error, ModelError) and folder.is_dir():
                return folder  # another shard's export was put in place first
            with contextlib.suppress(OSError):
                cache.rmdir()  # only while empty: a failed first export leaves no folder behind
            raise
    return folder


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
    from nar_search.models.weights import WEIGHTS_FILE, file_sha256
    from nar_search.search.tracking import EXPORT_MODEL_TYPE, PARENT_TAG, WEIGHTS_SHA256_TAG

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
                model_type=EXPORT_MODEL_TYPE,
                tags={WEIGHTS_SHA256_TAG: file_sha256(folder / WEIGHTS_FILE), "nar.source_run_id": source.run_id},
            )
        version = int(info.registered_model_version)
        if alias:
            client.set_registered_model_alias(name, alias, str(version))
    except MlflowException as error:
        raise ModelError(f"cannot register {name} in {hide_password(source.tracking_uri)}: {error.message.splitlines()[0]}") from None
    return version


def _last_line(error: Exception) -> str:
    # A wrapped error carries its traceback or a server's response above it; the cause is last.
    return str(error).strip().splitlines()[-1]
