"""Where MLflow's artifacts go: beside the SQLite store that records them, whatever folder the
command runs in (MLflow's own default, ./mlruns, is a folder no command of ours mentions)."""

from nar_search.search.tracking import Tracker


def test_a_local_store_keeps_its_artifacts_beside_it_not_in_the_working_folder(tmp_path, monkeypatch):
    work, store = tmp_path / "work", tmp_path / "store" / "mlflow.db"
    work.mkdir()
    monkeypatch.chdir(work)
    tracker = Tracker(f"sqlite:///{store}")
    with tracker.run("exp", "a-run") as run_id:
        tracker.log_files(run_id, {"note.txt": "kept"})
    assert list(work.iterdir()) == []
    assert [p.name for p in (store.parent / "artifacts" / "exp").rglob("note.txt")] == ["note.txt"]


def test_two_workers_that_make_the_experiment_at_once_get_the_same_one(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first, second = Tracker(store), Tracker(store)
    made = first.experiment_id("study")
    original, calls = second.client._client.get_experiment_by_name, []

    def looked_before_the_first_made_it(name):
        calls.append(name)
        return None if len(calls) == 1 else original(name)

    second.client._client.get_experiment_by_name = looked_before_the_first_made_it
    assert second.experiment_id("study") == made
    assert len(calls) == 2


def test_a_tracking_server_that_fails_after_a_trial_stops_no_worker(monkeypatch):
    import optuna
    import pytest
    from mlflow.exceptions import MlflowException

    from nar_search.search.front.publisher import FrontPublisher

    publisher = FrontPublisher("study", tracker=None, parent_run_id="parent")

    def server_down(study, trial):
        raise MlflowException("API request to http://mlflow:5000 failed: Connection refused")

    monkeypatch.setattr(publisher, "_after_trial", server_down)
    study = optuna.create_study()
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.warns(UserWarning, match="the front was not published after trial 0: API request"):
        publisher(study, study.trials[0])
