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
