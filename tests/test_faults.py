"""Fault injection: a study stopped by Ctrl-C or SIGTERM, or one of whose workers is killed
with kill -9, loses no trial, trains no parameter set twice, and leaves no MLflow run RUNNING."""

import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_study import POSTGRES_URL, _postgres_reachable, load, study_file

from nar_search.search.interrupts import Interrupted, interruptible
from nar_search.search.study.storage import open_storage
from nar_search.search.tracking import Tracker, UninterruptedClient

PHIS = [0.0, 1.0, 2.0]
SLOW_TRAINING = {"epochs": 3, "batch_size": 24, "patience": None, "accelerator": "cpu"}  # trials last a few seconds


def start(config: Path, workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nar_search.search.cli", "study", "run", str(config)],
        cwd=workdir,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def claimed_trial(config: Path, number: int, timeout: float = 240) -> optuna.trial.FrozenTrial:
    """Trial `number` once it runs, has claimed its worker and opened its MLflow run."""
    deadline = time.monotonic() + timeout
    study = None
    while time.monotonic() < deadline:
        try:
            study = study or load(config)  # one storage for all the polls: each opens database connections
            trials = study.get_trials(deepcopy=False)
        except (KeyError, optuna.exceptions.StorageInternalError):
            trials = []
        started = len(trials) > number and trials[number].state == TrialState.RUNNING
        if started and {"worker", "mlflow_run_id"} <= trials[number].user_attrs.keys():
            return trials[number]
        time.sleep(0.2)
    raise AssertionError(f"trial {number} never ran")


def assert_nothing_lost_or_doubled(config: Path, tracking: str, name: str) -> None:
    study = load(config)
    complete = Counter(t.params["phi"] for t in study.trials if t.state == TrialState.COMPLETE)
    assert complete == Counter(PHIS), complete  # every grid point complete, once
    tracker = Tracker(tracking)
    runs = tracker.client.search_runs([tracker.experiment_id(name)])
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    trained = Counter(r.data.params["phi"] for r in runs if r.info.status == "FINISHED" and "train.epochs" in r.data.params)
    assert trained == Counter(f"{phi:g}" for phi in PHIS) or trained == Counter(str(phi) for phi in PHIS), trained


def test_a_stop_during_a_tracking_call_is_raised_once_the_call_has_ended():
    steps = []

    class Store:
        def log(self, value: str) -> str:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler runs in here
            steps.append(value)
            return value

    with pytest.raises(Interrupted) as stop, interruptible():
        UninterruptedClient(Store()).log("logged")
    assert steps == ["logged"] and stop.value.exit_code == 143

    with pytest.raises(Interrupted), interruptible():
        Store().log("cut short")  # not deferred: the stop lands in the middle
    assert steps == ["logged"]


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_stopped_study_fails_its_trial_kills_its_run_and_resumes_once(tmp_path, patches, signum, code):
    config = study_file(tmp_path, patches, name="stopped", training=SLOW_TRAINING, search={"phi": PHIS})
    process = start(config, tmp_path)
    stopped = claimed_trial(config, 1)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == code, output
    assert "run the same command to resume" in output and "Traceback" not in output

    study = load(config)
    assert study.trials[1].state == TrialState.FAIL
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    killed = tracker.client.get_run(stopped.user_attrs["mlflow_run_id"])
    assert killed.info.status == "KILLED" and signal.Signals(signum).name in killed.data.tags["failure_reason"]
    parent = tracker.client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "KILLED"

    process = start(config, tmp_path)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert "1 failed trial(s) queued again (1)" in output
    assert_nothing_lost_or_doubled(config, f"sqlite:///{tmp_path / 'mlflow.db'}", "stopped")
    assert tracker.client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "FINISHED"


def kill_the_baselines_worker(storage: str, tmp_path: Path, patches: Path, name: str) -> None:
    config = study_file(tmp_path, patches, name=name, training=SLOW_TRAINING, storage=storage, workers=2, search={"phi": PHIS})
    process = start(config, tmp_path)
    baseline = claimed_trial(config, 0)
    os.kill(baseline.user_attrs["worker"]["pid"], signal.SIGKILL)
    output, _ = process.communicate(timeout=400)
    assert process.returncode == 0, output
    assert "a worker died" in output and "killed by SIGKILL" in output
    assert_nothing_lost_or_doubled(config, f"sqlite:///{tmp_path / 'mlflow.db'}", name)
    study = load(config)
    baselines = [t for t in study.trials if t.state == TrialState.COMPLETE and t.user_attrs.get("baseline")]
    assert study.trials[0].state == TrialState.FAIL and len(baselines) == 1
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert tracker.client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "FINISHED"


@pytest.mark.slow
def test_kill_9_of_a_journal_worker_loses_nothing(tmp_path, patches):
    kill_the_baselines_worker(f"journal:{tmp_path / 'study.journal'}", tmp_path, patches, "journal-kill")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CI") and not _postgres_reachable(), reason="PostgreSQL not running (CI starts it)")
def test_kill_9_of_a_postgresql_worker_loses_nothing_and_no_password_is_stored(tmp_path, patches):
    name = f"pg-kill-{uuid.uuid4().hex[:8]}"
    try:
        kill_the_baselines_worker(POSTGRES_URL, tmp_path, patches, name)
        password = POSTGRES_URL.split(":")[2].split("@")[0]
        study = optuna.load_study(study_name=name, storage=open_storage(POSTGRES_URL))
        study_attrs = [study.user_attrs, study._storage.get_study_system_attrs(study._study_id)]
        stored = study_attrs + [attrs for t in study.trials for attrs in (t.user_attrs, t.system_attrs)]
        assert password not in repr(stored)
        mlflow_files = [tmp_path / "mlflow.db", *Path(tmp_path).glob("mlruns/**/*"), *Path(tmp_path).glob("mlflow/**/*")]
        for path in mlflow_files:
            if path.is_file():
                assert password.encode() not in path.read_bytes(), path
        tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
        parent = tracker.client.get_run(study.user_attrs["mlflow_parent_run_id"])
        artifacts = tracker.client.download_artifacts(parent.info.run_id, "study_config.json", str(tmp_path / "downloaded"))
        assert password not in Path(artifacts).read_text() and "***" in Path(artifacts).read_text()
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(POSTGRES_URL))


def test_local_workers_get_the_study_through_a_pipe_never_a_file(tmp_path, patches, monkeypatch):
    """The settings may hold the storage's password: a worker reads them on its standard input,
    so a kill -9 of the study leaves no file with the password behind."""
    from nar_search.search.config import load_study_config
    from nar_search.search.study import workers

    started = []

    class Recorded:
        def __init__(self, args, stdin, stdout, stderr):
            self.args, self.stdin, self.written = args, self, b""
            started.append(self)

        def write(self, data: bytes) -> None:
            self.written += data

        def close(self) -> None:
            pass

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(workers.subprocess, "Popen", Recorded)
    url = "postgresql://nar:s3cret@127.0.0.1:5432/nar_test"
    config = load_study_config(None, {"name": "piped", "data.source": str(patches), "storage": url, "workers": 2})
    private = tmp_path / "tmp"  # this process's temporary files only: other tests write the shared one meanwhile
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    with workers.Workers(config):
        pass
    assert list(private.iterdir()) == []
    assert [w.args[-3:] for w in started] == [["-", "--no-recover", "--no-finish"]] * 2
    assert all(b"s3cret" in w.written for w in started)  # the worker reaches its storage
    monkeypatch.setattr("sys.stdin", io.StringIO(started[1].written.decode()))
    assert load_study_config(Path("-"), {}).storage == url  # what `nar study worker -` reads


@pytest.mark.parametrize(("stop", "sent"), [(KeyboardInterrupt(), signal.SIGINT), (Interrupted(signal.SIGTERM), signal.SIGTERM)])
def test_a_stop_reaches_the_local_workers_as_the_signal_it_was(stop, sent, tmp_path, patches, monkeypatch):
    from nar_search.search.config import load_study_config
    from nar_search.search.study.workers import Workers

    received = []

    class Running:
        def poll(self):
            return None

        def send_signal(self, signum):
            received.append(signum)

        def wait(self, timeout):
            return 0

    monkeypatch.chdir(tmp_path)
    workers = Workers(load_study_config(None, {"name": "w", "data.source": str(patches), "workers": 2}))
    workers.processes = [Running(), Running()]
    workers.__exit__(type(stop), stop, None)
    assert received == [sent, sent]


@pytest.mark.slow
def test_two_workers_and_no_driver_finish_the_study_when_one_is_killed(tmp_path, patches):
    config = study_file(
        tmp_path, patches, name="driverless", training=SLOW_TRAINING, storage=f"journal:{tmp_path / 'study.journal'}", search={"phi": PHIS}
    )
    command = [sys.executable, "-m", "nar_search.search.cli", "study", "worker", str(config)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(command, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment)
        for _ in range(2)
    ]
    victim = claimed_trial(config, 1).user_attrs["worker"]["pid"]
    os.kill(victim, signal.SIGKILL)
    survivor = next(w for w in workers if w.pid != victim)
    output, _ = survivor.communicate(timeout=400)
    assert survivor.returncode == 0, output
    assert next(w for w in workers if w.pid == victim).wait() == -signal.SIGKILL
    assert_nothing_lost_or_doubled(config, f"sqlite:///{tmp_path / 'mlflow.db'}", "driverless")
    study = load(config)
    assert study.trials[1].state == TrialState.FAIL and study.user_attrs.get("pareto_trials")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert tracker.client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "FINISHED"
