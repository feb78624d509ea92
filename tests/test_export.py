"""nar export (issue 7): a trained network from an MLflow run or a study trial into one folder
whose every format gives the PyTorch outputs, a WSInfer config, and the Model Registry."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import optuna
import pytest
import torch
from conftest import run_cli
from optuna.distributions import FloatDistribution

import nar_search.models.export
from nar_search.data.synth_patches import write_patches
from nar_search.lightning_modules.training import TrainingConfig
from nar_search.models.errors import ModelError
from nar_search.models.export import export_model, load_export
from nar_search.models.reduce import nar_reduce
from nar_search.models.registry import original_spec
from nar_search.models.spec import spec_from_json
from nar_search.models.weights import file_sha256
from nar_search.search.config import StudyConfigError
from nar_search.search.model_source import export_source, find_logged_model, find_source
from nar_search.search.training_run import DataSettings, train_and_record

FORMATS = {"model.safetensors", "spec.json", "model.torchscript.pt", "model.onnx", "preprocessing.json", "metadata.json", "config.json"}


@pytest.fixture(scope="module")
def trained(tracker, tmp_path_factory):
    """A reduced resnet18 (35 px) trained for an epoch and recorded as an MLflow run."""
    patches = tmp_path_factory.mktemp("patches")
    write_patches(patches, n=64, seed=0)
    spec = nar_reduce(original_spec("resnet18", 40), 1)
    config = TrainingConfig(epochs=1, batch_size=16, patience=None, accelerator="cpu")
    return train_and_record(
        tracker, "export-tests", "tiny", spec, DataSettings(patches), config, tmp_path_factory.mktemp("run"), progress=False
    )


UMASK = 0o027  # the group may read, others not: neither the default umask nor mkdtemp's 0o077


@pytest.fixture(scope="module")
def exported(trained, tracker, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "tiny"
    arguments = [
        "--run-id",
        trained.run_id,
        "--tracking-uri",
        tracker.tracking_uri,
        "--out",
        out,
        "--register",
        "til",
        "--alias",
        "champion",
    ]
    umask = os.umask(UMASK)
    try:
        assert run_cli("export", *arguments) == 0
    finally:
        os.umask(umask)
    return out


@pytest.mark.slow
def test_the_export_is_as_readable_as_the_umask_makes_new_files(exported):
    assert exported.stat().st_mode & 0o777 == 0o777 & ~UMASK
    assert {path.stat().st_mode & 0o777 for path in exported.iterdir()} == {0o666 & ~UMASK}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_every_format_reproduces_the_trained_network(exported, trained):
    assert {p.name for p in exported.iterdir()} == FORMATS
    side = trained.spec.input_size
    batch = torch.randn(5, 3, side, side)  # not the traced batch size: the batch is dynamic
    model = load_export(exported).model
    with torch.inference_mode():
        expected = model(batch)
        torchscript = torch.jit.load(str(exported / "model.torchscript.pt"))(batch)
    session = onnxruntime.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    from_onnx = torch.from_numpy(session.run(None, {"input": batch.numpy()})[0])
    assert expected.shape == (5, 2)
    assert torch.allclose(torchscript, expected, atol=1e-4) and torch.allclose(from_onnx, expected, atol=1e-4)
    batch_dim = onnx.load(str(exported / "model.onnx")).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    single = session.run(None, {"input": batch[:1].numpy()})[0]
    assert np.allclose(single, expected[:1].numpy(), atol=1e-4)


def test_preprocessing_and_metadata_describe_the_model(exported, trained, tracker):
    preprocessing = json.loads((exported / "preprocessing.json").read_text())
    side = trained.spec.input_size
    assert preprocessing["input_size"] == side and preprocessing["patch_um"] == 50
    assert preprocessing["um_per_px"] == pytest.approx(50 / side)
    assert preprocessing["class_names"] == ["til-negative", "til-positive"]
    assert preprocessing["mean"] == pytest.approx([0.485, 0.456, 0.406]) and preprocessing["std"] == pytest.approx([0.229, 0.224, 0.225])
    metadata = json.loads((exported / "metadata.json").read_text())
    metrics = tracker.client.get_run(trained.run_id).data.metrics
    assert metadata["source"]["mlflow_run_id"] == trained.run_id
    assert metadata["val_auc"] == metrics["val_auc"] and metadata["test_auc"] == metrics["test_auc"]
    assert metadata["gflops"] == pytest.approx(trained.gflops)
    assert spec_from_json((exported / "spec.json").read_text()) == trained.spec
    hashed = FORMATS - {"metadata.json"}
    assert metadata["sha256"] == {name: hashlib.sha256((exported / name).read_bytes()).hexdigest() for name in hashed}


def test_the_wsinfer_config_is_valid(exported, trained):
    """Checked against WSInfer's own model-config schema, as wsinfer-zoo installs it."""
    import importlib.resources

    import jsonschema

    schema = json.loads((importlib.resources.files("wsinfer_zoo") / "schemas" / "model-config.schema.json").read_text())
    config = json.loads((exported / "config.json").read_text())
    jsonschema.validate(config, schema)
    # What the schema cannot say: the sizes agree with each other and with the network.
    assert len(config["class_names"]) == config["num_classes"] == 2
    assert config["patch_size_pixels"] == trained.spec.input_size  # the network's input, 50 µm at spacing_um_px
    assert config["patch_size_pixels"] * config["spacing_um_px"] == pytest.approx(50)
    assert [step["name"] for step in config["transform"]] == ["Resize", "ToTensor", "Normalize"]


def test_the_export_is_registered_under_its_alias(exported, trained, tracker):
    import mlflow

    assert int(tracker.client.get_model_version_by_alias("til", "champion").version) == 1
    mlflow.set_tracking_uri(tracker.tracking_uri)
    registered = mlflow.pyfunc.load_model("models:/til@champion")
    side = trained.spec.input_size
    batch = np.random.default_rng(0).standard_normal((3, 3, side, side), dtype=np.float32)
    model = load_export(exported).model
    with torch.inference_mode():
        expected = model(torch.from_numpy(batch)).numpy()
    assert np.allclose(registered.predict(batch)["logits"], expected, atol=1e-4)


def test_a_model_uri_gives_back_the_network(exported, trained, tracker, tmp_path):
    """The registered export by alias and by version, and the trained candidate's LoggedModel
    by its id: each fetched with its checksum checked and exported again, the same weights."""
    candidate = tracker.client.get_run(trained.run_id).data.tags["nar.model_id"]
    weights = file_sha256(exported / "model.safetensors")
    for number, uri in enumerate(("models:/til@champion", "models:/til/1", f"models:/{candidate}")):
        folder, spec = export_source(find_logged_model(uri, tracker.tracking_uri), tmp_path / str(number), overwrite=False)
        assert spec == trained.spec and file_sha256(folder / "model.safetensors") == weights, uri
        assert json.loads((folder / "metadata.json").read_text())["source"]["model_uri"] == uri
    for uri, problem in (("models:/til/7", "no model models:/til/7"), ("til", "is not a model URI")):
        with pytest.raises(ModelError, match=problem):
            find_logged_model(uri, tracker.tracking_uri)


@pytest.mark.slow
def test_nar_predict_takes_a_registered_model(exported, tracker, synthetic_slide, tmp_path, capsys):
    """models:/NAME@ALIAS exported once into --out/.models and named by the maps; a second run
    into the same --out finds the same export and skips the slide it mapped."""
    out = tmp_path / "maps"
    arguments = [
        synthetic_slide,
        "--model",
        "models:/til@champion",
        "--tracking-uri",
        tracker.tracking_uri,
        "--out",
        out,
        "--engine",
        "onnx",
    ]
    assert run_cli("predict", *arguments, "--workers", 0) == 0
    [cached] = (out / ".models").iterdir()
    summary = json.loads((out / Path(synthetic_slide).stem / "summary.json").read_text())
    assert summary["model"]["export"] == str(cached)
    assert json.loads((cached / "metadata.json").read_text())["source"]["model_uri"] == "models:/til@champion"
    capsys.readouterr()
    assert run_cli("predict", *arguments, "--workers", 0) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert (
        run_cli(
            "predict", synthetic_slide, "--model", "models:/nothing/3", "--tracking-uri", tracker.tracking_uri, "--out", tmp_path / "none"
        )
        == 2
    )
    assert "no model models:/nothing/3" in capsys.readouterr().err and not (tmp_path / "none").exists()
    # a bad option is said before the model is fetched into --out
    assert run_cli("predict", *arguments[:5], "--out", tmp_path / "bad", "--mpp", 99) == 2
    assert "--mpp 99 is no slide resolution" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_a_study_trial_names_its_run(trained, tracker, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="tiny", storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr("config", {"tracking_uri": tracker.tracking_uri})
    trained_attrs = {
        "spec": trained.spec.to_dict(),
        "mlflow_run_id": trained.run_id,
        "val_auc": trained.val_auc,
        "test_auc": trained.test_auc,
        "gflops": trained.gflops,
        "method": "nar",
    }
    reused_attrs = {"method": "nar", "reused_from": 0, "mlflow_run_id": "a-run-without-artifacts", "val_auc": trained.val_auc}
    for attrs in (trained_attrs, reused_attrs, {"method": "nar"}):
        study.add_trial(
            optuna.trial.create_trial(
                params={"phi": 1.0},
                distributions={"phi": FloatDistribution(0, 3)},
                values=[trained.val_auc, trained.gflops],
                user_attrs=attrs,
            )
        )
    source = find_source(study="tiny", trial=1, storage=storage)  # reused: trial 0's run, and so named
    assert (source.study, source.trial, source.run_id, source.tracking_uri) == ("tiny", 0, trained.run_id, tracker.tracking_uri)
    with pytest.raises(StudyConfigError, match="holds no trained network"):
        find_source(study="tiny", trial=2, storage=storage)
    with pytest.raises(StudyConfigError, match="no trial 7"):
        find_source(study="tiny", trial=7, storage=storage)


def test_a_selection_file_names_the_run(tmp_path, tracker):
    selection = tmp_path / "selection.json"
    selection.write_text(json.dumps({"trial": 3, "method": "nar", "mlflow_run_id": "abc123", "gflops": 0.1}))
    source = find_source(selection=selection, tracking_uri=tracker.tracking_uri)
    assert (source.run_id, source.trial, source.tracking_uri) == ("abc123", 3, tracker.tracking_uri)
    with pytest.raises(StudyConfigError, match="one model source"):
        find_source(run_id="abc123", selection=selection)
    selection.write_text("[]")
    with pytest.raises(StudyConfigError, match="nar study select --json"):
        find_source(selection=selection)


def test_a_selection_that_says_other_than_its_run_is_refused(trained, tracker, tmp_path):
    from nar_search.search.model_source import ModelSource, fetch_model

    edited = ModelSource(trained.run_id, tracker.tracking_uri, study="tiny", trial=99)  # a selection whose trial was edited
    with pytest.raises(ModelError, match=r"does not match MLflow run .*study tiny \(the run's: none\), trial 99"):
        fetch_model(edited, tmp_path)
    assert fetch_model(ModelSource(trained.run_id, tracker.tracking_uri), tmp_path)[0] == trained.spec


def test_an_existing_folder_is_kept_without_overwrite(exported, trained, tracker, capsys):
    before = (exported / "model.safetensors").stat().st_mtime_ns
    assert run_cli("export", "--run-id", trained.run_id, "--tracking-uri", tracker.tracking_uri, "--out", exported) == 2
    error = capsys.readouterr().err
    assert "already exists" in error and "--overwrite" in error
    assert (exported / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
def test_overwrite_replaces_an_export_but_never_a_users_file(exported, trained, tracker, tmp_path, capsys):
    out = shutil.copytree(exported, tmp_path / "copy")
    (out / "notes.txt").write_text("mine")
    source = ["--run-id", trained.run_id, "--tracking-uri", tracker.tracking_uri]
    arguments = ["export", *source, "--out", out, "--overwrite"]
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert run_cli(*arguments) == 2
    error = capsys.readouterr().err.strip()
    assert "notes.txt" in error and len(error.splitlines()) == 1
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.safetensors").stat().st_mtime_ns == before

    (out / "notes.txt").unlink()
    assert run_cli(*arguments) == 0
    assert {p.name for p in out.iterdir()} == FORMATS and (out / "model.safetensors").stat().st_mtime_ns != before
    assert [p.name for p in tmp_path.iterdir()] == ["copy"]  # neither staging nor the old export left behind
    load_export(out)  # its checksums hold


def test_an_export_without_checksums_is_refused(exported, tmp_path):
    out = shutil.copytree(exported, tmp_path / "old")
    metadata = json.loads((out / "metadata.json").read_text())
    del metadata["sha256"]
    (out / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ModelError, match=r"records no SHA-256.*export the model again"):
        load_export(out)


def test_an_unwritable_out_fails_before_the_export_is_made(exported, tmp_path, monkeypatch):
    good = load_export(exported)
    monkeypatch.setattr(nar_search.models.export, "_write_formats", lambda *args: pytest.fail("the formats were written"))
    (tmp_path / "file").write_text("a user's file")
    with pytest.raises(ModelError, match="cannot write the export"):
        export_model(good.model, good.spec, good.preprocessing, tmp_path / "file" / "out")
    assert (tmp_path / "file").read_text() == "a user's file"


def test_an_unknown_run_is_one_clear_line(tracker, tmp_path, capsys):
    assert run_cli("export", "--run-id", "0" * 32, "--tracking-uri", tracker.tracking_uri, "--out", tmp_path / "x") == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "cannot fetch the model" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_format_that_disagrees_fails_the_export_and_leaves_nothing(exported, tmp_path, monkeypatch):
    good = load_export(exported)
    write_torchscript = nar_search.models.export.write_torchscript

    def torchscript_of_other_weights(model, example, path):
        write_torchscript(good.spec.build().eval(), example, path)  # freshly initialised: other weights

    monkeypatch.setattr(nar_search.models.export, "write_torchscript", torchscript_of_other_weights)
    monkeypatch.setattr(nar_search.models.export, "write_onnx", lambda model, example, path: shutil.copy(exported / "model.onnx", path))
    with pytest.raises(ModelError, match="TorchScript export does not reproduce"):
        export_model(good.model, good.spec, good.preprocessing, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_an_export_that_another_finished_first_into_the_same_out_is_kept(exported, tmp_path, monkeypatch):
    good = load_export(exported)
    out = tmp_path / "out"
    check = nar_search.models.export._check_round_trip

    def the_other_export_lands_meanwhile(folder, model, side):
        check(folder, model, side)
        shutil.copytree(exported, out)

    monkeypatch.setattr(nar_search.models.export, "_check_round_trip", the_other_export_lands_meanwhile)
    with pytest.raises(ModelError, match=r"another command wrote .*out.* while this export ran.*--overwrite"):
        export_model(good.model, good.spec, good.preprocessing, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in exported.iterdir())
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in exported.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging left
