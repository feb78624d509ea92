"""A trained candidate in MLflow 3's own terms (issue 30 items 2 and 3): its network a
LoggedModel with its metrics, its patches Datasets per split, its curves logged as each epoch
ends; against a real SQLite store."""

import json
import shutil
import signal
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback
from mlflow.entities import LoggedModelStatus

from nar_search.lightning_modules.datamodule import PatchDataModule
from nar_search.lightning_modules.training import TrainingConfig
from nar_search.models.errors import ModelError
from nar_search.models.reduce import nar_reduce
from nar_search.models.registry import original_spec
from nar_search.search.datasets import split_datasets
from nar_search.search.interrupts import Interrupted
from nar_search.search.tracking import MODEL_ID_TAG
from nar_search.search.training_run import DataSettings, train_and_record

TWO_EPOCHS = TrainingConfig(epochs=2, batch_size=16, patience=None, accelerator="cpu")
SPEC = nar_reduce(original_spec("resnet18", 40), 1)


@pytest.fixture(scope="module")
def trained(tracker, patches, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    return train_and_record(tracker, "entities", "trial 1 · nar ϕ1 α1.2", SPEC, DataSettings(patches), TWO_EPOCHS, run_dir, progress=False)


def test_the_network_is_a_logged_model_with_its_metrics(tracker, trained, patches):
    run = tracker.client.get_run(trained.run_id)
    model = tracker.client.get_logged_model(run.data.tags[MODEL_ID_TAG])
    assert model.status == LoggedModelStatus.READY
    assert model.source_run_id == trained.run_id and model.name == "trial 1 · nar ϕ1 α1,2"  # MLflow refuses '.' in a name
    listed = tracker.client.search_logged_models([run.info.experiment_id])
    assert [m.model_id for m in listed] == [model.model_id]
    metrics = {m.key: m for m in model.metrics}
    assert metrics["val_auc"].value == pytest.approx(trained.val_auc) and metrics["gflops"].value == pytest.approx(trained.gflops)
    assert (metrics["val_auc"].dataset_name, metrics["test_auc"].dataset_name) == (f"{patches.name} val", f"{patches.name} test")
    # the weights live in the model only, once
    assert "model.safetensors" not in {a.path for a in tracker.client.list_artifacts(trained.run_id)}


def test_the_patches_are_datasets_per_split(tracker, trained, patches, tmp_path):
    inputs = tracker.client.get_run(trained.run_id).inputs.dataset_inputs
    by_context = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs}
    assert set(by_context) == {"training", "validation", "test"}
    profiles = {context: json.loads(dataset.profile) for context, dataset in by_context.items()}
    assert sum(p["patches"] for p in profiles.values()) == 72  # conftest's patches
    assert all(
        sum(p["per_class"].values()) == p["patches"] and set(p["per_class"]) == {"til-negative", "til-positive"} for p in profiles.values()
    )
    # the digest says which patches a split holds, not where the folder lies
    copy = shutil.copytree(patches, tmp_path / "patches")
    module = PatchDataModule(str(copy), input_size=SPEC.input_size, seed=TWO_EPOCHS.seed)
    module.setup()
    assert split_datasets(copy, module)["val"].digest == by_context["validation"].digest
    listed = PatchDataModule(str(copy / "manifest.csv"), input_size=SPEC.input_size, seed=TWO_EPOCHS.seed)  # a list naming them
    listed.setup()
    assert split_datasets(copy / "manifest.csv", listed)["val"].digest == by_context["validation"].digest
    reseeded = PatchDataModule(str(copy), input_size=SPEC.input_size, seed=TWO_EPOCHS.seed + 1)
    reseeded.setup()
    assert split_datasets(copy, reseeded)["val"].digest != by_context["validation"].digest


def test_curves_are_logged_by_epoch(tracker, trained):
    history = tracker.client.get_metric_history(trained.run_id, "val_auc/seed0")
    assert [m.step for m in history] == [1, 2]


class StopAfter(Callback):
    """A SIGTERM's stop, arriving as the `epochs`-th epoch ends."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 == self.epochs:
            raise Interrupted(signal.SIGTERM)


def test_a_stopped_training_keeps_the_epochs_it_finished(tracker, patches, tmp_path):
    three = TrainingConfig(epochs=3, batch_size=16, patience=None, accelerator="cpu")
    with pytest.raises(Interrupted):
        train_and_record(
            tracker, "entities", "stopped", SPEC, DataSettings(patches), three, tmp_path, callbacks=[StopAfter(2)], progress=False
        )
    run = tracker.client.search_runs([tracker.experiment_id("entities")], "attributes.run_name = 'stopped'")[0]
    assert run.info.status == "KILLED"
    assert [m.step for m in tracker.client.get_metric_history(run.info.run_id, "train_loss/seed0")] == [1, 2]


def test_a_network_is_fetched_checked(tracker, trained, tmp_path):
    tracker.download_network(trained.run_id, tmp_path / "ok")
    assert {p.name for p in (tmp_path / "ok").iterdir()} == {"spec.json", "model.safetensors"}
    model = tracker.client.get_logged_model(tracker.client.get_run(trained.run_id).data.tags[MODEL_ID_TAG])
    stored = Path(model.artifact_location.removeprefix("file://")) / "model.safetensors"
    damaged = bytearray(stored.read_bytes())
    damaged[-1] ^= 0xFF
    original = stored.read_bytes()
    stored.write_bytes(bytes(damaged))
    try:
        with pytest.raises(ModelError, match="do not match their recorded SHA-256"):
            tracker.download_network(trained.run_id, tmp_path / "damaged")
    finally:
        stored.write_bytes(original)


def test_a_network_that_cannot_be_logged_is_failed_not_pending(tracker, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights without their spec")
    run_id = tracker.client.create_run(tracker.experiment_id("entities"), run_name="half").info.run_id
    with pytest.raises(OSError):
        tracker.log_network(run_id, tmp_path, {})
    [model] = [m for m in tracker.client.search_logged_models([tracker.experiment_id("entities")]) if m.source_run_id == run_id]
    assert model.status == LoggedModelStatus.FAILED and MODEL_ID_TAG not in tracker.client.get_run(run_id).data.tags
    with pytest.raises(ModelError, match="not READY"):
        tracker.download_model(model, tmp_path / "fetched")
