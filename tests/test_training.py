"""One reduced network trained for an epoch and recorded in MLflow (issue: Training)."""

import csv
from pathlib import Path

import pytest
import torch

from nar_search.data.errors import DataError
from nar_search.data.synth_patches import write_patches
from nar_search.lightning_modules.classifier import PatchClassifier
from nar_search.lightning_modules.errors import TrainingError
from nar_search.lightning_modules.training import TrainingConfig
from nar_search.models.cost import spec_cost
from nar_search.models.reduce import nar_reduce
from nar_search.models.registry import original_spec
from nar_search.models.spec import spec_from_json
from nar_search.models.weights import build_with_weights
from nar_search.search.training_run import DataSettings, train_and_record

TINY = TrainingConfig(epochs=1, batch_size=16, patience=None, accelerator="cpu")


@pytest.fixture(scope="module")
def patches(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("patches")
    write_patches(folder, n=80, seed=0)
    return folder


def tiny_spec():
    return nar_reduce(original_spec("resnet18", 40), 1)  # 35 px, narrower and shallower


def train(tracker, data, tmp_path, **kwargs):
    return train_and_record(tracker, "tests", "tiny", tiny_spec(), DataSettings(data), TINY, tmp_path, progress=False, **kwargs)


@pytest.mark.slow
def test_training_records_params_metrics_and_artifacts(tracker, patches, tmp_path):
    outcome = train(tracker, patches, tmp_path)
    run = tracker.client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model"] == "resnet18" and params["method"] == "nar" and params["phi"] == "1"
    for name in (
        "alpha",
        "beta",
        "gamma",
        "depth_factor",
        "width_factor",
        "resolution_factor",
        "depths",
        "input_size",
        "rounding",
        "train.epochs",
        "train.lr",
    ):
        assert name in params, name
    metrics = run.data.metrics
    for name in ("val_auc", "val_auc_std", "test_auc", "test_auc_std", "gflops", "params", "latency_ms_per_patch", "train_seconds"):
        assert name in metrics, name
    assert metrics["test_auc"] == pytest.approx(outcome.test_auc) and metrics["gflops"] == pytest.approx(outcome.gflops)
    assert outcome.gflops == pytest.approx(spec_cost(tiny_spec()).gflops)
    assert [m.step for m in tracker.client.get_metric_history(outcome.run_id, "val_auc/seed0")] == [1]  # epochs trained
    artifacts = {a.path for a in tracker.client.list_artifacts(outcome.run_id)}
    assert {"spec.json", "roc_test.png", "seeds.json"} <= artifacts

    # spec + safetensors from the run's LoggedModel rebuild the trained model exactly
    folder = tmp_path / "dl"
    tracker.download_network(outcome.run_id, folder)
    spec = spec_from_json((folder / "spec.json").read_text())
    rebuilt = build_with_weights(spec, folder / "model.safetensors")
    original = build_with_weights(spec, tmp_path / "model.safetensors")
    batch = torch.randn(2, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        assert torch.allclose(rebuilt(batch), original(batch))


@pytest.mark.slow
def test_auc_is_measured_on_the_held_out_split(tracker, patches, tmp_path, monkeypatch):
    seen = {}
    original_test_step = PatchClassifier.test_step

    def counting_test_step(self, batch, batch_idx):
        seen["test"] = seen.get("test", 0) + len(batch[1])
        return original_test_step(self, batch, batch_idx)

    monkeypatch.setattr(PatchClassifier, "test_step", counting_test_step)
    train(tracker, patches, tmp_path)
    from nar_search.lightning_modules.datamodule import PatchDataModule

    datamodule = PatchDataModule(str(patches), input_size=35)
    datamodule.setup()
    assert seen["test"] == datamodule.num_test > 0
    train_slides = {datamodule.dataset.slides[i] for i in datamodule.splits["train"]}
    test_slides = {datamodule.dataset.slides[i] for i in datamodule.splits["test"]}
    assert not train_slides & test_slides


def _failed_run(tracker):
    runs = tracker.client.search_runs([tracker.experiment_id("tests")], order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0]


@pytest.mark.slow
def test_nan_loss_fails_the_run_clearly(tracker, patches, tmp_path, monkeypatch):
    monkeypatch.setattr(PatchClassifier, "forward", lambda self, x: torch.full((len(x), 2), float("nan"), requires_grad=True))
    with pytest.raises(TrainingError, match="loss is nan"):
        train(tracker, patches, tmp_path)
    run = _failed_run(tracker)
    assert run.info.status == "FAILED" and "loss is nan" in run.data.tags["failure_reason"]


def test_single_class_evaluation_split_fails_the_run_clearly(tracker, patches, tmp_path):
    manifest = tmp_path / "one_class.csv"
    rows = list(csv.DictReader((patches / "manifest.csv").open()))
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "slide"])
        for row in rows:
            if row["label"] == "1":
                writer.writerow([str(patches / row["path"]), 1, row["slide"]])
    with pytest.raises(DataError, match="only class"):
        train(tracker, manifest, tmp_path)
    assert _failed_run(tracker).info.status == "FAILED"


def test_empty_dataset_fails_the_run_clearly(tracker, tmp_path):
    empty = tmp_path / "empty"
    (empty / "til-positive").mkdir(parents=True)
    (empty / "til-negative").mkdir()
    with pytest.raises(DataError):
        train(tracker, empty, tmp_path)
    assert _failed_run(tracker).info.status == "FAILED"


def test_lightning_predict_scores_every_patch_of_the_source(patch_folder):
    """`Trainer.predict` with the data module: TIL-positive probabilities, in the source's order."""
    import lightning.pytorch as pl

    from nar_search.lightning_modules.datamodule import PatchDataModule

    datamodule = PatchDataModule(patch_folder, input_size=32, batch_size=16)
    classifier = PatchClassifier(original_spec("resnet18", 32).to_dict())
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False)
    scores = torch.cat(trainer.predict(classifier, datamodule=datamodule))
    assert scores.shape == (60,) and bool(((scores >= 0) & (scores <= 1)).all())


def test_the_progress_bar_counts_epochs_from_one_as_the_epochs_option_does():
    from types import SimpleNamespace

    from nar_search.lightning_modules.progress import EpochProgressBar

    bar = EpochProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=2)
    assert [bar._get_train_description(epoch).strip() for epoch in (0, 1)] == ["Epoch 1/2", "Epoch 2/2"]
