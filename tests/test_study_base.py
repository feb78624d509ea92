"""Studies that start from a trained network: a given base is evaluated, not trained; later
trials inherit its weights and learn from it; a resumed study never trains its base again."""

from pathlib import Path

import optuna
import pytest
import timm
import torch
from conftest import run_cli
from optuna.trial import TrialState
from safetensors.torch import load_file, save_file
from test_study import load, study_file

import nar_search.models.init_modes.inherit
import nar_search.search.training_run
from nar_search.models.registry import original_spec
from nar_search.models.weights import save_network
from nar_search.search.tracking import Tracker


@pytest.fixture
def base_folder(tmp_path) -> Path:
    spec = original_spec("resnet18", 48)
    torch.manual_seed(0)
    save_network(spec.build(), spec, tmp_path / "base")
    return tmp_path / "base"


def child_runs(workdir: Path, name: str) -> dict[str, object]:
    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = tracker.client.search_runs([tracker.experiment_id(name)], filter_string="tags.`optuna.trial_number` != ''")
    return {r.data.tags["optuna.trial_number"]: r for r in runs}


@pytest.mark.slow
def test_a_given_base_is_evaluated_and_its_weights_start_every_trial(workdir, patches, base_folder, monkeypatch):
    started = []
    real_initialise = nar_search.models.init_modes.inherit.Inherit.initialise

    def recording_initialise(self, model, spec, base):
        real_initialise(self, model, spec, base)
        started.append((spec, {k: v.clone() for k, v in model.state_dict().items()}))

    monkeypatch.setattr(nar_search.models.init_modes.inherit.Inherit, "initialise", recording_initialise)
    config = study_file(workdir, patches, name="based", base=str(base_folder), n_trials=2)
    assert run_cli("study", "run", str(config)) == 0

    study = load(config)
    baseline, candidate = study.trials
    assert baseline.user_attrs["baseline"] and baseline.user_attrs["epochs"] == 0  # evaluated, not trained
    assert candidate.user_attrs["epochs"] == 1 and candidate.state == TrialState.COMPLETE
    runs = child_runs(workdir, "based")
    assert runs["0"].data.params["init"] == "base"
    params = runs["1"].data.params
    assert params["init"] == "inherit" and (params["distill.weight"], params["distill.temperature"]) == ("0.5", "2.0")
    # The candidate's first conv started as the leading channels of the base's.
    ((_spec, state),) = started
    base_state = load_file(str(base_folder / "model.safetensors"))
    width = state["conv1.weight"].shape[0]
    assert width < base_state["conv1.weight"].shape[0]
    assert torch.equal(state["conv1.weight"], base_state["conv1.weight"][:width])


@pytest.mark.slow
def test_without_a_base_the_baseline_trains_once_and_a_resume_reuses_it(workdir, patches, monkeypatch):
    config = study_file(workdir, patches, name="selfbased", n_trials=2)
    assert run_cli("study", "run", str(config)) == 0
    study = load(config)
    assert Path(study.user_attrs["base_network"], "spec.json").is_file()

    trained = []
    real_train = nar_search.search.training_run.train_spec

    def counting_train(spec, *args, **kwargs):
        trained.append(spec.reduction.phi)
        return real_train(spec, *args, **kwargs)

    monkeypatch.setattr(nar_search.search.training_run, "train_spec", counting_train)
    config = study_file(workdir, patches, name="selfbased", n_trials=3)
    assert run_cli("study", "run", str(config)) == 0
    assert trained == [2.0]  # only the new trial trained; the baseline was not trained again
    study = load(config)
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1
    assert child_runs(workdir, "selfbased")["2"].data.params["init"] == "inherit"


@pytest.mark.slow
def test_a_plain_timm_state_dict_is_a_base(workdir, patches, tmp_path):
    state = {k: v.contiguous() for k, v in timm.create_model("resnet18", num_classes=2).state_dict().items()}
    save_file(state, tmp_path / "timm.safetensors")
    config = study_file(workdir, patches, name="timmbased", base=str(tmp_path / "timm.safetensors"), n_trials=1)
    assert run_cli("study", "run", str(config)) == 0
    assert load(config).trials[0].user_attrs["epochs"] == 0


def test_a_base_that_does_not_fit_is_one_line_and_writes_nothing(workdir, patches, tmp_path, capsys):
    state = {k: v.contiguous() for k, v in timm.create_model("resnet34", num_classes=2).state_dict().items()}
    save_file(state, tmp_path / "other.safetensors")
    config = study_file(workdir, patches, name="misfit", base=str(tmp_path / "other.safetensors"))
    assert run_cli("study", "run", str(config)) == 2
    error = capsys.readouterr().err.strip()
    assert "do not fit the architecture spec" in error and len(error.splitlines()) == 1
    assert not (workdir / "study.db").exists() or not optuna.get_all_study_names(f"sqlite:///{workdir / 'study.db'}")


@pytest.mark.slow
def test_the_paper_protocol_trains_from_scratch(workdir, patches):
    config = study_file(
        workdir,
        patches,
        name="paperlike",
        n_trials=2,
        training={"epochs": 1, "batch_size": 24, "patience": None, "accelerator": "cpu", "init": "scratch", "distill": None},
    )
    assert run_cli("study", "run", str(config)) == 0
    params = child_runs(workdir, "paperlike")["1"].data.params
    assert params["init"] == "scratch" and params["distill"] == "none"


@pytest.mark.slow
def test_nar_train_refuses_a_base_that_does_not_fit(workdir, patches, tmp_path, capsys):
    state = {k: v.contiguous() for k, v in timm.create_model("resnet34", num_classes=2).state_dict().items()}
    save_file(state, tmp_path / "other.safetensors")
    code = run_cli(
        "train",
        "--data",
        str(patches),
        "--model",
        "resnet18",
        "--input-size",
        "48",
        "--phi",
        "1",
        "--base",
        str(tmp_path / "other.safetensors"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'm.db'}",
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and "do not fit the architecture spec" in error and len(error.splitlines()) == 1
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("flags", [["--init", "inherit"], ["--distill-weight", "0.3"]], ids=["inherit", "distill"])
def test_nar_train_asks_for_a_base_before_it_learns_from_one(workdir, patches, tmp_path, capsys, flags):
    code = run_cli(
        "train",
        "--data",
        str(patches),
        "--model",
        "resnet18",
        "--input-size",
        "48",
        "--phi",
        "1",
        *flags,
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'm.db'}",
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and "give --base" in error and len(error.splitlines()) == 1
    assert not (workdir / "runs").exists() and not (tmp_path / "m.db").exists()
