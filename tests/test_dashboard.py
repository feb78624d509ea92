"""`nar dashboard` (issue 16): the MLflow UI of any store and optuna-dashboard of a study, on
127.0.0.1, stopped with their servers; bad input one line, no password shown; optuna-dashboard
given the front as the MLflow views draw it, GFLOPs across, and the baseline named (issue 30).
The servers start for real: the MLflow UI takes some 25 to 60 s to answer on a busy 2-core machine."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import run_cli
from optuna_dashboard import get_note, save_note
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

from nar_search.search.cli.dashboard import FRONT_PLOT_ID, show_front
from nar_search.search.front.plots import BASELINE_NAME
from nar_search.search.study.record import StudyRecord, TrialRecord
from nar_search.search.tracking import Tracker
from nar_search.search.urls import without_password

NAR = Path(sys.executable).with_name("nar")
START_SECONDS = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(args: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """`nar ARGS` in the background, its output (and its server's) in `log`."""
    return subprocess.Popen([str(NAR), *args], stdout=log.open("w"), stderr=subprocess.STDOUT, **kwargs)


def get_json(process: subprocess.Popen, url: str, log: Path, until=lambda answer: True) -> dict:
    """The JSON at `url` once it answers (and satisfies `until`), while `process` serves it."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answer = json.loads(response.read())
            if until(answer):
                return answer
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {START_SECONDS} s: {log.read_text()[-3000:]}")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # a process that ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def stop(process: subprocess.Popen, signum: int) -> int:
    process.send_signal(signum)
    return process.wait(timeout=60)


def assert_port_free(port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def experiment_names(answer: dict) -> set[str]:
    return {experiment["name"] for experiment in answer.get("experiments", [])}


@pytest.mark.slow
def test_the_mlflow_ui_serves_nar_mlflow_home_and_sigterm_stops_its_server(tmp_path, monkeypatch):
    home = tmp_path / "elsewhere"
    monkeypatch.setenv("NAR_MLFLOW_HOME", str(home))
    Tracker().experiment_id("seen-through-the-ui")  # in $NAR_MLFLOW_HOME/store, not ./mlflow
    port, log = free_port(), tmp_path / "dashboard.log"
    dashboard = start(["dashboard", "--port", str(port)], log, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=100"
        answer = get_json(dashboard, url, log, until=experiment_names)
        assert "seen-through-the-ui" in experiment_names(answer)
        [server] = children(dashboard.pid)
        assert os.getpgid(server) == server != os.getpgid(dashboard.pid)  # a group of its own: stopped as one
        assert stop(dashboard, signal.SIGTERM) == 0
        assert not group_alive(server), "the MLflow server outlived `nar dashboard`"
        assert_port_free(port)
        assert "stopped (SIGTERM)" in log.read_text()
        assert not (tmp_path / "mlflow").exists()
    finally:
        dashboard.kill()


@pytest.mark.slow
def test_optuna_dashboard_names_the_objectives_and_stops_on_sigterm(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="named", storage=url, directions=["maximize", "minimize"])
    study.optimize(lambda trial: (trial.suggest_float("phi", 0, 3), 1.0), n_trials=2)
    port, log = free_port(), tmp_path / "optuna.log"
    dashboard = start(["dashboard", "--optuna", "--name", "named", "--storage", url, "--port", str(port)], log)
    try:
        [summary] = get_json(dashboard, f"http://127.0.0.1:{port}/api/studies", log)["study_summaries"]
        detail = get_json(dashboard, f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", log)
        assert detail["objective_names"] == ["val_auc", "gflops"]
        assert detail["plotly_graph_objects"] == []  # not a study of `nar study run`: nothing of its to draw
        assert stop(dashboard, signal.SIGTERM) == 0
        assert_port_free(port)
    finally:
        dashboard.kill()
    assert optuna.load_study(study_name="named", storage=url).metric_names == ["val_auc", "gflops"]


def trained(study: optuna.Study, val_auc: float, gflops: float, **record) -> None:
    attrs = TrialRecord(method="nar", gflops=gflops, val_auc=val_auc, test_auc=val_auc, mlflow_run_id="run", **record).attrs()
    study.add_trial(optuna.trial.create_trial(values=[val_auc, gflops], user_attrs=attrs))


def test_optuna_dashboard_is_given_the_front_gflops_across_and_the_baseline_named():
    study = optuna.create_study(study_name="drawn", directions=["maximize", "minimize"])
    StudyRecord(config={"name": "drawn"}).write(study)
    trained(study, 0.90, 1.0, baseline=True)
    trained(study, 0.85, 0.1)
    show_front(study)
    trained(study, 0.70, 0.01)
    show_front(study)  # the dashboard started again: its plot redrawn, not one more
    attrs = study._storage.get_study_system_attrs(study._study_id)
    plots = get_plotly_graph_objects(attrs)
    assert list(plots) == [FRONT_PLOT_ID]
    figure = json.loads(plots[FRONT_PLOT_ID])
    assert figure["layout"]["xaxis"]["title"]["text"].startswith("GFLOPs") and figure["layout"]["yaxis"]["title"]["text"] == "val AUC"
    assert [trace["x"] for trace in figure["data"] if trace["name"] == BASELINE_NAME] == [[1.0]]
    assert "3 trained" in figure["layout"]["title"]["text"]
    note = get_note(study)
    assert note.startswith("**Trial 0 is the baseline** (ϕ = 0)") and "gflops as its Objective X" in note
    assert attrs["dashboard:note_ver"] == 1  # written once: the same note again is left as it is
    save_note(study, "the user's own words")
    show_front(study)
    assert get_note(study) == "the user's own words"


def test_a_busy_port_is_one_line_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAR_MLFLOW_HOME", str(tmp_path / "home"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_cli("dashboard", "--port", str(port)) == 2
    error = capsys.readouterr().err.strip()
    assert f"port {port} on 127.0.0.1 is in use" in error and "--port" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "home").exists()


def test_a_missing_store_or_study_is_one_line_and_creates_nothing(tmp_path, capsys):
    store = tmp_path / "nowhere" / "mlflow.db"
    assert run_cli("dashboard", "--tracking-uri", f"sqlite:///{store}", "--port", str(free_port())) == 2
    assert f"no MLflow store at {store}" in capsys.readouterr().err
    assert not store.parent.exists()
    assert run_cli("dashboard", "--optuna", "--name", "absent", "--storage", f"sqlite:///{tmp_path / 'study.db'}") == 2
    assert "no study storage" in capsys.readouterr().err
    assert not (tmp_path / "study.db").exists()


def test_no_password_is_printed(capsys):
    storage = "postgresql://nar:hunter2@127.0.0.1:1/nowhere"
    assert run_cli("dashboard", "--optuna", "--name", "x", "--storage", storage) == 2
    error = capsys.readouterr().err.strip()
    assert "cannot open study storage" in error and "hunter2" not in error and len(error.splitlines()) == 1


def test_a_tracking_server_is_named_not_served(capsys):
    assert run_cli("dashboard", "--tracking-uri", "http://me:secret@mlflow.lab:5000") == 0
    output = capsys.readouterr().out
    assert "MLflow server at http://me:***@mlflow.lab:5000" in output and "secret" not in output


def test_tracking_uri_and_optuna_are_one_or_the_other(capsys):
    assert run_cli("dashboard", "--optuna", "--name", "x", "--tracking-uri", "sqlite:///m.db") == 2
    assert "--tracking-uri is for the MLflow UI" in capsys.readouterr().err


def test_the_help_names_the_environment_variable(capsys):
    assert run_cli("dashboard", "--help") == 0
    assert "NAR_MLFLOW_HOME" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("url", "reachable"),
    [
        ("postgresql://nar:hunter2@db.lab:5432/nar?sslmode=require", "postgresql://nar@db.lab:5432/nar?sslmode=require"),
        ("postgresql://nar:***@db.lab/nar", "postgresql://nar@db.lab/nar"),  # as a study records it, masked
        ("http://me:secret@mlflow.lab:5000", "http://me@mlflow.lab:5000"),
        ("sqlite:////data/mlflow.db", "sqlite:////data/mlflow.db"),
        ("journal:studies/tiny.journal", "journal:studies/tiny.journal"),
    ],
)
def test_a_url_without_its_password_still_names_its_database(url, reachable):
    assert without_password(url) == reachable
