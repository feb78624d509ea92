"""A study against a real MLflow tracking server that asks for a password (MLflow's basic-auth
app): the credentials come from MLflow's own environment variables, reach the workers, and are
never written anywhere; wrong ones or no server are one line before anything is made."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli
from test_study import study_file

PASSWORD = "Nar-s3cret-h0rse-battery"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server --app-name basic-auth` on 127.0.0.1, its stores in a folder of its own."""
    home = tmp_path_factory.mktemp("server")
    (home / "auth.ini").write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{home / 'auth.db'}\nadmin_username = admin\n"
        f"admin_password = {PASSWORD}\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = _free_port()
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(home / "auth.ini"), "MLFLOW_FLASK_SERVER_SECRET_KEY": "nar-tests-csrf"}
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "artifacts")]
    process = subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                assert process.poll() is None, "the MLflow server stopped at start"
                time.sleep(0.5)
        yield url, home
    finally:
        process.terminate()
        process.wait(timeout=30)


def _files_with(folder: Path, text: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_study_with_workers_logs_to_a_server_with_the_password_only_in_the_environment(server, workdir, patches, monkeypatch):
    url, home = server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    journal = f"journal:{workdir / 'study.journal'}"
    config = study_file(workdir, patches, storage=journal, tracking_uri=url, workers=2, n_trials=2, search={"phi": [0, 1]})

    assert run_cli("study", "run", str(config)) == 0

    import mlflow

    client = mlflow.MlflowClient(url)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) >= 3 and all(r.info.status == "FINISHED" for r in runs)  # the parent, the baseline, ϕ 1
    for run in runs:
        assert PASSWORD not in str(run.data.params) + str(run.data.tags)
    # Not in an artifact, a network, the study's journal, nor any file the study left here.
    assert _files_with(home / "artifacts", PASSWORD) == []
    assert _files_with(workdir, PASSWORD) == []


@pytest.mark.slow
def test_wrong_credentials_are_one_line_before_anything_is_made(server, workdir, patches, monkeypatch, capsys):
    url, _ = server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    config = study_file(workdir, patches, tracking_uri=url)
    before = sorted(workdir.rglob("*"))

    assert run_cli("study", "run", str(config)) != 0

    error = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(error) == 1 and "refused the credentials (401)" in error[0] and "MLFLOW_TRACKING_PASSWORD" in error[0]
    assert "not-the-password" not in error[0]
    assert sorted(workdir.rglob("*")) == before


@pytest.mark.slow
@pytest.mark.parametrize("kill", [False, True], ids=["all-live", "one-killed"])
def test_three_workers_started_together_on_postgresql_and_a_server_make_one_study(server, workdir, patches, monkeypatch, kill):
    import uuid

    import optuna
    from optuna.trial import TrialState
    from test_study import POSTGRES_URL, _postgres_reachable

    from nar_search.search.study.storage import open_storage

    if not os.environ.get("CI") and not _postgres_reachable():
        pytest.skip("PostgreSQL not running (CI starts it)")
    url, _ = server
    name = f"together-{uuid.uuid4().hex[:8]}"
    training = {"epochs": 3, "batch_size": 24, "patience": None, "accelerator": "cpu"}  # long enough to be killed in
    config = study_file(workdir, patches, name=name, storage=POSTGRES_URL, tracking_uri=url, search={"phi": [0, 1, 2]}, training=training)
    environment = {**os.environ, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": PASSWORD, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "nar_search.search.cli", "study", "worker", str(config)]
    folders = [workdir / f"node-{i}" for i in range(3)]
    for folder in folders:
        folder.mkdir()
    workers = [
        subprocess.Popen(command, cwd=folder, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for folder in folders
    ]
    try:
        if kill:  # the worker of the first candidate, mid-trial: the others retry it and end the study
            from test_faults import claimed_trial

            victim = claimed_trial(config, 1).user_attrs["worker"]["pid"]
            os.kill(victim, signal.SIGKILL)
        errors = [worker.communicate(timeout=600)[1] for worker in workers]
        expected = [-signal.SIGKILL if kill and worker.pid == victim else 0 for worker in workers]
        assert [worker.returncode for worker in workers] == expected, "\n".join(errors)
        study = optuna.load_study(study_name=name, storage=open_storage(POSTGRES_URL))
        trained = sorted(t.params["phi"] for t in study.trials if t.state == TrialState.COMPLETE and "reused_from" not in t.user_attrs)
        assert trained == [0, 1, 2]

        import mlflow

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
        client = mlflow.MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        parents = [r for r in runs if r.data.tags.get("nar.role") == "study"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the workers ended it
        statuses = sorted(r.info.status for r in runs if r.data.tags.get("nar.role") != "study")
        assert statuses.count("RUNNING") == 0 and statuses.count("KILLED") == int(kill)  # the killed trial's run
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(POSTGRES_URL))
