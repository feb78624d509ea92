"""Every command the CLI prints as a hint runs as printed (issue 16), on a tiny study with its
own storage and tracking URI, the case the hints used to get wrong: select's export, the
dashboard after a run, status's rerun after a worker died, the run a missing study needs;
and the selection JSON exports the chosen network from wherever it is read."""

import contextlib
import io
import json
import shlex
import signal
from pathlib import Path

import optuna
import pytest
from conftest import run_cli
from optuna.trial import TrialState
from test_dashboard import children, experiment_names, free_port, get_json, group_alive, start, stop
from test_recovery import dead_worker
from test_study import load, study_file

from nar_search.search.study.record import TrialRecord


@pytest.fixture(scope="module")
def study(tmp_path_factory, patches) -> tuple[Path, str]:
    """The tiny study's folder and what `nar study run` printed."""
    folder = tmp_path_factory.mktemp("hints")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        config = study_file(folder, patches, n_trials=2, search={"phi": [0, 1]})
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            assert run_cli("study", "run", config.name) == 0  # named as a user would, from its folder
    return folder, output.getvalue()


def hint(output: str, lead: str) -> list[str]:
    """The command a line starting with `lead` prints, split as a shell would."""
    [line] = [line for line in output.splitlines() if line.startswith(lead)]
    words = shlex.split(line.removeprefix(lead))
    assert words[0] == "nar"
    return words


def cli_output(*args: str, expect: int = 0) -> str:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert run_cli(*args) == expect
    return output.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("by_name", [False, True], ids=["study-file", "name-and-storage"])
def test_the_select_hint_exports_the_chosen_trial(study, by_name, tmp_path, monkeypatch):
    folder, _ = study
    monkeypatch.chdir(tmp_path if by_name else folder)
    naming = ["--name", "tiny", "--storage", f"sqlite:///{folder / 'study.db'}"] if by_name else ["tiny.yaml"]
    words = hint(cli_output("study", "select", *naming, "--max-auc-drop", "1"), "export it: ")
    assert ("--study" in words) == by_name
    assert run_cli(*words[1:]) == 0
    out = Path(words[words.index("--out") + 1])
    assert out.parts[0] == "exports" and (out / "model.onnx").is_file()


@pytest.mark.slow
def test_a_selection_carries_the_study_s_storage_and_tracking_uri(study, tmp_path, monkeypatch):
    folder, _ = study
    monkeypatch.chdir(folder)
    selection = json.loads(cli_output("study", "select", "tiny.yaml", "--max-auc-drop", "1", "--json"))
    assert selection["study"] == "tiny"
    assert selection["storage"] == f"sqlite:///{folder / 'study.db'}"
    assert selection["tracking_uri"] == f"sqlite:///{folder / 'mlflow.db'}"
    chosen = tmp_path / "chosen.json"
    chosen.write_text(json.dumps(selection))
    monkeypatch.chdir(tmp_path)  # elsewhere: the local store here knows nothing of the study
    assert run_cli("export", "--selection", str(chosen), "--out", "model") == 0
    source = json.loads((tmp_path / "model" / "metadata.json").read_text())["source"]
    assert (source["study"], source["trial"], source["mlflow_run_id"]) == ("tiny", selection["trial"], selection["mlflow_run_id"])


@pytest.mark.slow
def test_the_status_hint_recovers_a_dead_workers_trial(study, monkeypatch):
    folder, _ = study
    monkeypatch.chdir(folder)
    storage = load(folder / "tiny.yaml")
    trained = storage.trials[1]
    storage.enqueue_trial(trained.params)
    orphan = storage.ask(trained.distributions)  # the same network: its retry reuses it, nothing trains
    TrialRecord(worker=dead_worker()).write(orphan)
    words = hint(cli_output("study", "status", "tiny.yaml"), "the trials of workers that are gone are marked failed and queued again by: ")
    assert run_cli(*words[1:]) == 0
    after = load(folder / "tiny.yaml")
    assert after.trials[orphan.number].state == TrialState.FAIL
    assert all(t.state != TrialState.RUNNING for t in after.trials)
    assert "workers that are gone" not in cli_output("study", "status", "tiny.yaml")


@pytest.mark.slow
def test_the_missing_study_hint_runs_it(study, patches, monkeypatch, capsys):
    folder, _ = study
    monkeypatch.chdir(folder)
    other = study_file(folder, patches, name="other", n_trials=1, search={"phi": [0]})
    assert run_cli("study", "status", other.name) == 2  # its storage holds tiny only
    error = capsys.readouterr().err
    words = shlex.split(error.split("`")[1])
    assert words == ["nar", "study", "run", other.name]
    assert run_cli(*words[1:]) == 0
    assert [t.state for t in optuna.load_study(study_name="other", storage=f"sqlite:///{folder / 'study.db'}").trials] == [
        TrialState.COMPLETE
    ]


@pytest.mark.slow
def test_the_dashboard_hint_serves_the_study_s_runs_until_ctrl_c(study, tmp_path):
    folder, output = study
    line = next(line for line in output.splitlines() if line.startswith("dashboard: "))
    words = hint(line.split(" (MLflow experiment")[0], "dashboard: ")
    assert words == ["nar", "dashboard", "tiny.yaml"]
    # As printed, but on a free port: 5000 may be taken on a test machine.
    port, log = free_port(), tmp_path / "dashboard.log"
    dashboard = start([*words[1:], "--port", str(port)], log, cwd=folder)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=100"
        assert "tiny" in experiment_names(get_json(dashboard, url, log, until=experiment_names))
        [server] = children(dashboard.pid)
        assert stop(dashboard, signal.SIGINT) == 0  # Ctrl-C reaches `nar dashboard` alone: its server has its own group
        assert not group_alive(server), "the MLflow server outlived `nar dashboard`"
    finally:
        dashboard.kill()


def test_a_selection_names_its_files_so_that_they_are_found_from_anywhere(tmp_path, monkeypatch):
    from nar_search.search.locations import absolute

    monkeypatch.chdir(tmp_path)
    assert absolute("sqlite:///studies/x.db") == f"sqlite:///{tmp_path}/studies/x.db"
    assert absolute("journal:runs/x.journal") == f"journal:{tmp_path}/runs/x.journal"
    for url in (f"sqlite:///{tmp_path}/x.db", "postgresql://nar@db/nar", "http://127.0.0.1:5000"):
        assert absolute(url) == url


@pytest.mark.slow
def test_select_says_the_margin_and_the_baseline_it_chose_by_and_the_front_its_marks(study, monkeypatch):
    import re

    folder, _ = study
    monkeypatch.chdir(folder)
    chosen = cli_output("study", "select", "tiny.yaml", "--max-auc-drop", "0.25")
    assert re.search(r"within 0\.25 of the baseline's \d\.\d{4} \(at least -?\d\.\d{4}", chosen), chosen
    front = cli_output("study", "pareto", "tiny.yaml")
    assert "fewer GFLOPs" in front and "cost ÷" not in front
    assert ("* the baseline" in front) == bool(re.search(r"│\s*\d+\*", front))  # the footnote only with a starred row
