"""MLflow tracking: where the store lives, experiments, and runs that always end in a
terminal state (FINISHED, stopped early or not; FAILED with the reason; or KILLED on Ctrl-C)."""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, cast

from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModel, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nar_search.models.errors import ModelError
from nar_search.search.exclusive import one_at_a_time
from nar_search.search.interrupts import Interrupted, deferred
from nar_search.search.locations import check_tracking_uri, local_file

MLFLOW_HOME_ENV = "NAR_MLFLOW_HOME"
PARENT_TAG = "mlflow.parentRunId"
# MLflow 3's UI opens an experiment by its kind: ours are model development, not GenAI traces.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
DUPLICATE_ROW = ("UNIQUE constraint failed", "duplicate key value violates unique constraint")  # SQLite's, PostgreSQL's
NOTE_TAG = "mlflow.note.content"  # the description the MLflow UI shows, as Markdown
# Why a FINISHED run ended before its last epoch: over a GFLOPs budget, pruned, stopped at a rung.
STOPPED_EARLY_TAG = "nar.stopped_early"
# A trained network is an MLflow LoggedModel (the UI's Models tab) of our own two files, spec.json
# and model.safetensors: no flavour, so nothing pickled. Its run names it by this tag.
MODEL_ID_TAG = "nar.model_id"
MODEL_TYPE = "nar-network"
EXPORT_MODEL_TYPE = "nar-export"  # an export logged for the Model Registry: ONNX, the other files beside it
WEIGHTS_SHA256_TAG = "nar.weights_sha256"
DATASET_CONTEXT_TAG = "mlflow.data.context"
_BAD_MODEL_NAME = str.maketrans({".": ",", "/": "-", ":": "-", "%": "-", '"': "", "'": ""})  # what MLflow refuses in a model's name
_BATCH = 500  # MLflow's log_batch accepts at most 1000 metrics and 100 params a call


def _stopped_early(error: BaseException) -> bool:
    import optuna  # here: only a run that ends in an exception asks

    return isinstance(error, optuna.TrialPruned)


def mlflow_home() -> Path:
    """The MLflow home: `$NAR_MLFLOW_HOME`, else `mlflow/` in the working directory."""
    return Path(os.environ.get(MLFLOW_HOME_ENV, "mlflow")).resolve()


def default_tracking_uri() -> str:
    return f"sqlite:///{mlflow_home() / 'store' / 'mlflow.db'}"


def artifact_root(store: Path) -> Path:
    """Where the artifacts of the SQLite store `store` go: beside it."""
    return store.resolve().parent / "artifacts"


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts to dotted keys, sequences to comma-joined strings: MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(v) for v in value)
        else:
            flat[name] = str(value)
    return flat


# MLflow 3.17's UI shows every experiment in its GenAI view (traces, agent versions) unless the
# sidebar's toggle was switched in this browser or the address says otherwise: ours say so.
UI_VIEW = "?workflowType=machine_learning"


def run_link(experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI's model-training view, relative to the UI's address."""
    return f"#/experiments/{experiment_id}/runs/{run_id}{UI_VIEW}"


class UninterruptedClient:
    """An MlflowClient whose calls each finish before a Ctrl-C or SIGTERM is raised (see `deferred`)."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def uninterrupted(*args: Any, **kwargs: Any) -> Any:
            with deferred():
                return value(*args, **kwargs)

        return uninterrupted


class Tracker:
    """A thin layer over MlflowClient for NAR's experiments and runs."""

    def __init__(self, tracking_uri: str | None = None, create: bool = True) -> None:
        """The store at `tracking_uri` (default: the local one); without `create`, a local store
        that is not there is refused rather than made (commands that only read create nothing)."""
        self.tracking_uri = tracking_uri or default_tracking_uri()
        check_tracking_uri(self.tracking_uri, create)
        store = local_file(self.tracking_uri)
        # A local store keeps its artifacts beside it, not in MLflow's ./mlruns of whatever folder a command runs in.
        self.artifact_root = artifact_root(store) if store is not None else None
        if self.artifact_root is not None and create:
            self.artifact_root.mkdir(parents=True, exist_ok=True)
        # Processes that open a new store together would each run its migrations and collide:
        # the first makes it while the others wait.
        with one_at_a_time(store.parent) if store is not None and create else nullcontext():
            self.client = UninterruptedClient(MlflowClient(tracking_uri=self.tracking_uri))

    def experiment_id(self, name: str) -> str:
        """The experiment `name`, made if need be: workers that start together each get the one
        that the first of them made."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return cast(str, experiment.experiment_id)
        location = (self.artifact_root / name).as_uri() if self.artifact_root is not None else None
        try:
            return cast(str, self.client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS))
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return cast(str, self.client.get_experiment_by_name(name).experiment_id)

    def describe_experiment(self, name: str, markdown: str) -> None:
        """Sets the experiment's description, as the MLflow UI shows it."""
        self.client.set_experiment_tag(self.experiment_id(name), NOTE_TAG, markdown)

    @contextmanager
    def run(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> Iterator[str]:
        """A new run, ended FINISHED, FAILED (reason in tag `failure_reason`) or KILLED. A run
        stopped early on purpose (a pruner, a GFLOPs budget, a rung: Optuna's TrialPruned) is
        FINISHED, the reason in tag `nar.stopped_early`."""
        run_tags = dict(tags or {})
        if parent_run_id:
            run_tags[PARENT_TAG] = parent_run_id
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name, tags=run_tags)
        run_id = run.info.run_id
        try:
            yield run_id
        except (KeyboardInterrupt, Interrupted) as stop:
            self.client.set_tag(run_id, "failure_reason", f"interrupted ({stop or 'Ctrl-C'})")
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
            raise
        except BaseException as error:
            if _stopped_early(error):
                self.client.set_tag(run_id, STOPPED_EARLY_TAG, str(error)[:5000] or type(error).__name__)
                self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
            else:
                self.client.set_tag(run_id, "failure_reason", f"{type(error).__name__}: {error}"[:5000])
                self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(k, v[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_metric_series(run_id, [(name, float(value), step) for name, value in metrics.items()])

    def log_metric_series(
        self, run_id: str, points: list[tuple[str, float, int]], model_id: str | None = None, dataset: Dataset | None = None
    ) -> None:
        """Metrics (name, value, step), of the LoggedModel `model_id` and measured on `dataset` when given."""
        now = int(time.time() * 1000)  # two workers logging a parent's figures at one step are two points, not one
        on = {"dataset_name": dataset.name, "dataset_digest": dataset.digest} if dataset is not None else {}
        items = [Metric(name, value, now, step, model_id=model_id, **on) for name, value, step in points]
        for start in range(0, len(items), _BATCH):
            try:
                self.client.log_batch(run_id, metrics=items[start : start + _BATCH])
            except MlflowException as error:
                # A request the client sent again (a server that dropped the answer, not the
                # write) finds its metrics there already: they are logged.
                if not any(duplicate in str(error) for duplicate in DUPLICATE_ROW):
                    raise

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_files(self, run_id: str, files: Mapping[str, bytes | str], artifact_path: str | None = None) -> None:
        """Writes {name: content} to a temporary folder and uploads it as the run's artifacts."""
        with tempfile.TemporaryDirectory() as folder:
            for name, content in files.items():
                target = Path(folder) / name
                target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
            self.client.log_artifacts(run_id, folder, artifact_path)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_datasets(self, run_id: str, datasets: Mapping[str, Dataset]) -> None:
        """The run's inputs, {context (train, validation, test): dataset}: the UI's Datasets."""
        inputs = [DatasetInput(dataset, tags=[InputTag(DATASET_CONTEXT_TAG, context)]) for context, dataset in datasets.items()]
        self.client.log_inputs(run_id, datasets=inputs)

    def log_network(self, run_id: str, folder: Path, params: Mapping[str, Any]) -> str:
        """The network in `folder` (spec.json, model.safetensors) as a LoggedModel of run `run_id`,
        named as the run is; returns its id, which the run's tag `nar.model_id` records too. A
        model whose files could not all be logged is marked FAILED, never left PENDING."""
        from nar_search.models.weights import SPEC_FILE, WEIGHTS_FILE, file_sha256

        run = self.client.get_run(run_id)
        weights = folder / WEIGHTS_FILE
        with deferred():  # a stop waits until the model is READY or FAILED
            model = self.client.create_logged_model(
                run.info.experiment_id,
                name=(run.info.run_name or run_id).translate(_BAD_MODEL_NAME),
                source_run_id=run_id,
                params=flatten(params),
                model_type=MODEL_TYPE,
                tags={WEIGHTS_SHA256_TAG: file_sha256(weights)},
            )
            try:
                for path in (folder / SPEC_FILE, weights):  # the two files alone: a run folder holds checkpoints too
                    self.client.log_model_artifact(model.model_id, str(path))
                self.set_tags(run_id, {MODEL_ID_TAG: model.model_id})
            except BaseException:
                self.client.finalize_logged_model(model.model_id, "FAILED")
                raise
            self.client.finalize_logged_model(model.model_id, "READY")
        return cast(str, model.model_id)

    def download_network(self, run_id: str, folder: Path) -> None:
        """The network that run `run_id` trained (spec.json, model.safetensors) into `folder`. A
        run logged before networks were LoggedModels holds the two files as its own artifacts."""
        from nar_search.models.weights import SPEC_FILE, WEIGHTS_FILE

        model_id = self.client.get_run(run_id).data.tags.get(MODEL_ID_TAG)
        if model_id is None:
            for name in (SPEC_FILE, WEIGHTS_FILE):
                self.client.download_artifacts(run_id, name, str(folder))
            return
        self.download_model(self.client.get_logged_model(model_id), folder)

    def download_model(self, model: LoggedModel, folder: Path) -> None:
        """The network of a LoggedModel, a trained candidate or a registered export (which keeps
        it among its extra files), into `folder`; its weights checked against the recorded SHA-256."""
        from mlflow.artifacts import download_artifacts
        from mlflow.entities import LoggedModelStatus

        from nar_search.models.weights import SPEC_FILE, WEIGHTS_FILE, file_sha256

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the commands' own lines say what was fetched
        if model.status != LoggedModelStatus.READY:
            raise ModelError(f"model {model.model_id} ({model.name}) is {model.status}, not READY: its files were never all logged")
        if WEIGHTS_SHA256_TAG not in model.tags:
            raise ModelError(
                f"model {model.model_id} ({model.name}) holds no network of NAR Search: "
                "name one that a study or `nar export --register` logged"
            )
        within = "extra_files/" if model.model_type == EXPORT_MODEL_TYPE else ""
        for name in (SPEC_FILE, WEIGHTS_FILE):
            download_artifacts(
                artifact_uri=f"{model.artifact_location}/{within}{name}", dst_path=str(folder), tracking_uri=self.tracking_uri
            )
        if file_sha256(folder / WEIGHTS_FILE) != model.tags[WEIGHTS_SHA256_TAG]:
            raise ModelError(
                f"the weights of model {model.model_id} ({model.name}) do not match their recorded SHA-256: "
                "the store is damaged; log the model again"
            )
