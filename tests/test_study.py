"""Studies end to end at tiny scale: baseline first, MLflow parent and child runs, the Pareto
front, resume after Ctrl-C, parallel workers on PostgreSQL, and bad configs refused."""

import json
import os
import uuid
from html import escape
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import run_cli
from optuna.trial import TrialState

import nar_search.search.training_run
from nar_search.search.study.storage import open_storage
from nar_search.search.tracking import UI_VIEW, Tracker

POSTGRES_URL = os.environ.get("NAR_TEST_POSTGRES_URL", "postgresql://nar:nar-test-only@127.0.0.1:5432/nar_test")


def study_file(folder: Path, patches: Path, **overrides) -> Path:
    config = {
        "name": "tiny",
        "model": "resnet18",
        "input_size": 48,
        "data": {"source": str(patches)},
        "training": {"epochs": 1, "batch_size": 24, "patience": None, "accelerator": "cpu"},
        "search": {"phi": [0, 1, 2]},
        "sampler": "grid",
        "n_trials": 3,
        "confirm": {"seeds": 1},  # confirmation has tests of its own (test_confirmation.py)
        "storage": f"sqlite:///{folder / 'study.db'}",
        "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
    }
    config.update(overrides)
    path = folder / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def load(config_path: Path) -> optuna.Study:
    config = yaml.safe_load(config_path.read_text())
    return optuna.load_study(study_name=config["name"], storage=open_storage(config["storage"]))


@pytest.mark.slow
def test_a_three_trial_study_end_to_end(workdir, patches, capsys):
    config = study_file(workdir, patches)
    assert run_cli("study", "run", str(config)) == 0
    study = load(config)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3
    assert study.trials[0].params["phi"] == 0 and study.trials[0].user_attrs["baseline"]
    assert study.metric_names == ["val_auc", "gflops"]  # as optuna-dashboard shows the objectives
    # The base stays (every later trial here starts from it); the candidates' networks are in MLflow.
    assert sorted(p.name for p in (workdir / "runs" / "tiny").iterdir()) == ["trial-0"]

    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = tracker.experiment_id("tiny")
    runs = tracker.client.search_runs([experiment])
    parent = next(r for r in runs if r.data.tags.get("nar.role") == "study")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert {a.path for a in tracker.client.list_artifacts(parent.info.run_id)} >= {
        "pareto.png",
        "pareto.html",
        "pareto.json",
        "study_config.json",
    }
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"method", "phi", "input_size", "depths"} <= child.data.params.keys()
        assert {"val_auc", "test_auc", "gflops"} <= child.data.metrics.keys()
        assert "spec.json" in {a.path for a in tracker.client.list_artifacts(child.info.run_id)}
        # its network a LoggedModel (the Models tab) with its AUCs; its patches Datasets
        model = tracker.client.get_logged_model(child.data.tags["nar.model_id"])
        assert model.source_run_id == child.info.run_id and {"val_auc", "test_auc"} <= {m.key for m in model.metrics}
        assert len(tracker.client.get_run(child.info.run_id).inputs.dataset_inputs) == 3
    # trial ↔ run linked both ways; Pareto tags match Optuna's front
    by_run = {t.user_attrs["mlflow_run_id"]: t for t in trials}
    assert {c.info.run_id for c in children} == set(by_run)
    for child in children:
        assert child.data.tags["optuna.trial_number"] == str(by_run[child.info.run_id].number)
    front_runs = {t.user_attrs["mlflow_run_id"] for t in study.best_trials}
    assert {c.info.run_id for c in children if c.data.tags["pareto"] == "true"} == front_runs
    # runs named by what they train; the experiment's description and the offline HTML view link to them
    names = [f"trial {n} · {'baseline · ' if n == 0 else ''}nar ϕ{n} α1.2 β1.1 γ1.15" for n in range(3)]
    assert sorted(c.info.run_name for c in children) == names
    assert sorted(c.data.tags["nar.baseline"] for c in children) == ["false", "false", "true"]
    # MLflow's UI opens the experiment as model development, not as GenAI traces
    assert tracker.client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    description = tracker.client.get_experiment(experiment).tags["mlflow.note.content"]
    assert f"](#/experiments/{experiment}/runs/{parent.info.run_id}{UI_VIEW})" in description
    listed = {int(line.split("|")[1]) for line in description.splitlines() if line.startswith("| ") and line[2].isdigit()}
    assert listed == {t.number for t in study.best_trials}
    assert all(f"[run](#/experiments/{experiment}/runs/{run_id}{UI_VIEW})" in description for run_id in front_runs)
    page = Path(tracker.client.download_artifacts(parent.info.run_id, "pareto.html", str(workdir))).read_text()
    assert page.count('<a class="point ') == 3 and "https://" not in page
    assert all(f'href="#/experiments/{experiment}/runs/{c.info.run_id}{escape(UI_VIEW)}"' in page for c in children)

    capsys.readouterr()
    assert run_cli("study", "pareto", str(config), "--json") == 0
    table = json.loads(capsys.readouterr().out)
    assert sorted(row["trial"] for row in table) == sorted(t.number for t in study.best_trials)

    assert run_cli("study", "select", str(config), "--max-auc-drop", "1.0", "--json") == 0
    chosen = json.loads(capsys.readouterr().out)
    assert chosen["gflops"] == min(t.user_attrs["gflops"] for t in trials)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_infeasible_draws_of_a_bayes_study_do_not_use_up_its_trials(workdir, patches, capsys, sampler):
    # Much of this space has α·β² > 2 (γ < 1) or an input side below 32 px at large ϕ; with a
    # list for α, α and β are drawn as written and each draw measured (ranges for both are drawn
    # feasible: tests/test_methods.py).
    search = {"phi": {"low": 0, "high": 3}, "methods": {"nar": {"alpha": [1.5, 1.6], "beta": {"low": 1.1, "high": 1.3}}}}
    config = study_file(workdir, patches, name="wide", sampler=sampler, search=search)
    assert run_cli("study", "run", str(config)) == 0
    trials = load(config).get_trials(states=(TrialState.COMPLETE,))
    trained = [t for t in trials if "gflops" in t.user_attrs]
    infeasible = [t for t in trials if any(v > 0 for v in t.constraints.values())]
    assert len(trained) == 3 and infeasible and len(trials) == len(trained) + len(infeasible)
    # The GP sampler refuses a study whose trials set different constraints (a γ < 1 draw never measured its input).
    assert {frozenset(t.constraints) for t in trials} == {frozenset({"gamma_below_one", "input_below_minimum"})}
    assert f"{len(infeasible)} infeasible draw(s) trained nothing" in capsys.readouterr().out

    assert run_cli("study", "status", str(config)) == 0
    assert f"infeasible draws │ {len(infeasible)} " in capsys.readouterr().out


@pytest.mark.slow
def test_a_study_whose_space_gives_no_network_stops_short_and_says_so(workdir, patches, capsys):
    search = {"phi": {"low": 1, "high": 3}, "methods": {"nar": {"alpha": {"low": 1.7, "high": 1.8}, "beta": {"low": 1.2, "high": 1.3}}}}
    config = study_file(workdir, patches, name="void", sampler="random", n_trials=2, search=search)  # α·β² > 2 throughout
    assert run_cli("study", "run", str(config)) == 0
    trials = load(config).trials
    assert len(trials) == 1 + 10 * 2 and [t.number for t in trials if "gflops" in t.user_attrs] == [0]  # the baseline
    assert "stopped short at 1/2 trials: 20 draws gave no network" in capsys.readouterr().out


@pytest.mark.slow
def test_an_interrupted_study_resumes(workdir, patches, monkeypatch):
    config = study_file(workdir, patches, name="resumable")
    real_train = nar_search.search.training_run.train_spec
    calls = []

    def interrupted_second_trial(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(nar_search.search.training_run, "train_spec", interrupted_second_trial)
    assert run_cli("study", "run", str(config)) == 130
    study = load(config)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]
    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}")
    killed = tracker.client.get_run(study.trials[1].user_attrs["mlflow_run_id"])
    assert killed.info.status == "KILLED" and killed.data.tags["optuna.trial_number"] == "1"

    monkeypatch.setattr(nar_search.search.training_run, "train_spec", real_train)
    assert run_cli("study", "run", str(config)) == 0
    study = load(config)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1


def _postgres_reachable() -> bool:
    try:
        open_storage(POSTGRES_URL)
        return True
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CI") and not _postgres_reachable(), reason="PostgreSQL not running (CI starts it)")
def test_two_workers_share_one_postgresql_study(workdir, patches, monkeypatch):
    from sqlalchemy.engine import make_url

    from nar_search.search.urls import without_password

    # The password where PostgreSQL's client keeps it, not in the study file: the workers find it too.
    monkeypatch.setenv("PGPASSWORD", make_url(POSTGRES_URL).password or "")
    name = f"workers-{uuid.uuid4().hex[:8]}"
    config = study_file(
        workdir,
        patches,
        name=name,
        storage=without_password(POSTGRES_URL),
        workers=2,
        n_trials=4,
        sampler="tpe",
        search={"phi": [0, 1, 2, 3]},
    )
    try:
        assert run_cli("study", "run", str(config)) == 0
        study = load(config)
        numbers = [t.number for t in study.trials]
        assert len(numbers) == len(set(numbers))
        assert all(t.state == TrialState.COMPLETE for t in study.trials)
        assert 4 <= len(study.trials) <= 5  # a second worker may finish the trial it had started
        tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}")
        runs = tracker.client.search_runs([tracker.experiment_id(name)], filter_string="tags.`optuna.trial_number` != ''")
        tagged = [r.data.tags["optuna.trial_number"] for r in runs]
        assert sorted(tagged) == sorted(str(n) for n in numbers)  # one run per trial, none lost or doubled
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(POSTGRES_URL))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CI") and not _postgres_reachable(), reason="PostgreSQL not running (CI starts it)")
def test_workers_that_open_a_new_postgresql_database_together_all_open_it():
    import subprocess
    import sys

    import psycopg

    schema = f"fresh_{uuid.uuid4().hex[:8]}"  # a new, empty database for Optuna: its own schema
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
        code = "import sys; from nar_search.search.study.storage import open_storage; open_storage(sys.argv[1])"
        workers = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True) for _ in range(6)]
        errors = [worker.communicate(timeout=120)[1] for worker in workers]
        assert [worker.returncode for worker in workers] == [0] * 6, "\n".join(errors)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["journal", "postgresql"])
def test_a_run_and_two_workers_started_together_on_a_new_study_make_one_of_everything(workdir, patches, storage):
    import subprocess
    import sys

    if storage == "postgresql" and not os.environ.get("CI") and not _postgres_reachable():
        pytest.skip("PostgreSQL not running (CI starts it)")
    name = f"together-{uuid.uuid4().hex[:8]}"
    url = f"journal:{workdir / 'study.journal'}" if storage == "journal" else POSTGRES_URL
    config = study_file(workdir, patches, name=name, storage=url, search={"phi": [0, 1, 2, 3]}, n_trials=4)
    nar = [sys.executable, "-m", "nar_search.search.cli"]
    commands = [[*nar, "study", "run", str(config)], *[[*nar, "study", "worker", str(config)]] * 2]
    processes = [
        subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for command in commands
    ]
    try:
        errors = [process.communicate(timeout=600)[1] for process in processes]
        assert [process.returncode for process in processes] == [0, 0, 0], "\n".join(errors)
        study = load(config)
        assert all(t.state == TrialState.COMPLETE for t in study.trials)
        assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1
        trained = [t.params["phi"] for t in study.trials if t.user_attrs.get("reused_from") is None]
        assert sorted(trained) == [0, 1, 2, 3]  # every point trained once: a point drawn twice is reused, not trained
        tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}")
        runs = tracker.client.search_runs([tracker.experiment_id(name)])
        assert sum(r.data.tags.get("nar.role") == "study" for r in runs) == 1
        assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    finally:
        if storage == "postgresql":
            optuna.delete_study(study_name=name, storage=open_storage(POSTGRES_URL))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sampler": "annealing"}, "sampler"),
        ({"n_trials": -1}, "n_trials"),
        ({"search": {"methods": {"nar": {"alpha": [1.6], "beta": [1.3], "gamma": [1.3]}}}}, "within"),
        ({"search": {"methods": {"nar": {"alpha": [0.9, 1.2]}}}}, "≥ 1"),
        ({"storage": "postgresql://nar:hunter2@127.0.0.1:1/nowhere"}, "cannot open study storage"),
        ({"workers": 2}, "SQLite"),
        ({"search": {"phi": [0, 9]}}, "largest ϕ"),
    ],
    ids=["sampler", "trials", "constraint", "coefficient", "storage", "sqlite-workers", "phi"],
)
def test_bad_configs_are_one_clear_line_and_leave_no_study(workdir, patches, capsys, overrides, message):
    config = study_file(workdir, patches, **overrides)
    assert run_cli("study", "run", str(config)) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1 and "Traceback" not in error
    assert "hunter2" not in error
    assert not (workdir / "study.db").exists() or not optuna.get_all_study_names(f"sqlite:///{workdir / 'study.db'}")


@pytest.mark.slow
def test_a_study_compares_nar_ir_and_resrep(workdir, patches, capsys):
    search = {
        "phi": [0, 1],
        "methods": {"nar": {}, "ir": {}, "resrep": {"flops_target": [0.5], "mask_interval": 1, "warmup_epochs": 0}},
    }
    config = study_file(workdir, patches, name="methods", search=search, n_trials=4)
    assert run_cli("study", "run", str(config)) == 0
    capsys.readouterr()
    assert run_cli("study", "pareto", str(config), "--all", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["method"] for row in rows} == {"nar", "ir", "resrep"}
    resrep = next(row for row in rows if row["method"] == "resrep")
    baseline = next(row for row in rows if row["baseline"])
    assert resrep["flops_target"] == 0.5 and resrep["gflops"] < baseline["gflops"]
    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = tracker.client.search_runs([tracker.experiment_id("methods")], filter_string="tags.method = 'resrep'")
    settings = {key: value for key, value in run.data.params.items() if key.startswith("resrep.")}
    assert settings == {"resrep.flops_target": "0.5", "resrep.mask_interval": "1", "resrep.warmup_epochs": "0", "resrep.max_new": "4"}
    parent = tracker.client.search_runs([tracker.experiment_id("methods")], filter_string="tags.`nar.role` = 'study'")[0]
    assert parent.data.params["search.methods.resrep.flops_target"] == "0.5" and parent.data.params["search.phi"] == "0.0,1.0"
    study = load(config)
    assert {r["trial"] for r in rows if r["pareto"]} == {t.number for t in study.best_trials}


@pytest.mark.slow
def test_budget_mode_prunes_networks_over_the_budget_but_trains_the_baseline(workdir, patches, capsys):
    from nar_search.models.cost import spec_cost
    from nar_search.models.reduce import nar_reduce
    from nar_search.models.registry import original_spec

    budget = spec_cost(nar_reduce(original_spec("resnet18", 48), 1)).gflops * 1.01  # ϕ = 1 fits, ϕ = 0 does not
    config = study_file(
        workdir,
        patches,
        name="budget",
        objective="budget",
        gflops_budget=budget,
        pruner="median",
        search={"phi": [0, 1, 2]},
        sampler="grid",
        n_trials=3,
    )
    assert run_cli("study", "run", str(config)) == 0
    study = load(config)
    baseline = study.trials[0]
    assert baseline.user_attrs["baseline"] and baseline.state == TrialState.COMPLETE
    assert baseline.constraints["gflops_over_budget"] > 0  # over the budget: trained as the reference, never on the front
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    capsys.readouterr()
    assert run_cli("study", "pareto", str(config), "--json") == 0
    front = json.loads(capsys.readouterr().out)
    assert front and all(row["gflops"] <= budget for row in front)


@pytest.mark.slow
def test_a_budget_study_under_hyperband_reports_each_epoch_and_ends_every_run(workdir, patches):
    training = {"epochs": 3, "batch_size": 24, "patience": None, "accelerator": "cpu"}
    config = study_file(workdir, patches, name="hyperband", objective="budget", gflops_budget=10.0, pruner="hyperband", training=training)
    assert run_cli("study", "run", str(config)) == 0
    study = load(config)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    trained = [t for t in study.trials if not t.user_attrs.get("baseline")]
    assert trained and all(t.intermediate_values for t in trained)  # the pruner saw every epoch it judged
    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = tracker.client.search_runs([tracker.experiment_id("hyperband")])
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_a_run_stopped_early_on_purpose_is_finished_and_says_why(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(optuna.TrialPruned), tracker.run("early", "pruned") as run_id:
        raise optuna.TrialPruned("val AUC under the median at epoch 2")
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags
    assert run.data.tags["nar.stopped_early"] == "val AUC under the median at epoch 2"


@pytest.mark.slow
def test_a_candidate_over_the_budget_is_pruned_with_a_finished_run_that_says_so(workdir, patches):
    from nar_search.models.cost import spec_cost
    from nar_search.models.reduce import nar_reduce
    from nar_search.models.registry import original_spec

    budget = spec_cost(nar_reduce(original_spec("resnet18", 48), 2)).gflops * 1.01  # ϕ = 2 fits, ϕ = 1 does not
    config = study_file(workdir, patches, name="over", objective="budget", gflops_budget=budget, pruner="none")
    assert run_cli("study", "run", str(config)) == 0
    over = [t for t in load(config).trials if t.state == TrialState.PRUNED]
    assert [t.params["phi"] for t in over] == [1]
    run = Tracker(f"sqlite:///{workdir / 'mlflow.db'}").client.get_run(over[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "over the budget" in run.data.tags["nar.stopped_early"]


@pytest.mark.parametrize("command", ["status", "pareto", "select"])
def test_read_only_commands_on_an_unknown_study_create_nothing(workdir, capsys, command):
    assert run_cli("study", command, "--name", "nosuchstudy") == 2
    assert run_cli("study", command, "--name", "nosuchstudy", "--storage", f"journal:{workdir / 'j' / 'x.journal'}") == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all("no study storage" in line and "nar study run" in line for line in errors)
    assert list(workdir.iterdir()) == []


def test_a_grid_worker_stops_once_every_point_is_started():
    """A worker that ends its trial while another still trains the last grid point must stop,
    not draw that point again (the fidelity benchmark's spare grid row)."""
    from nar_search.search.study.samplers import EnqueueSafeGridSampler

    study = optuna.create_study(sampler=EnqueueSafeGridSampler({"phi": [1.0, 2.0, 3.0]}, seed=0))
    elsewhere = study.ask()  # another worker's trial, still training its grid point
    study.optimize(lambda trial: trial.suggest_float("phi", 1, 3), n_trials=10)
    finished = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(finished) == 2
    points = {t.params["phi"] for t in finished} | {elsewhere.suggest_float("phi", 1, 3)}
    assert points == {1.0, 2.0, 3.0}


def test_a_worker_that_joins_a_study_being_made_waits_for_its_baseline_and_parent_run(workdir, patches):
    import threading

    from nar_search.search.config import load_study_config
    from nar_search.search.study import space
    from nar_search.search.study.opening import open_study
    from nar_search.search.study.record import StudyRecord, TrialRecord
    from nar_search.search.study.runner import parent_run

    config = load_study_config(study_file(workdir, patches, storage=f"journal:{workdir / 'study.journal'}"), {})
    storage = open_storage(config.storage_url)
    # Another worker has just made the study, and is about to queue its baseline and make its parent run.
    made = optuna.create_study(study_name=config.name, storage=storage, directions=["maximize", "minimize"])
    StudyRecord(creator={"host": "elsewhere", "pid": 1, "started": 0}).write(made)

    def the_maker_goes_on() -> None:
        made.enqueue_trial(space.baseline_params(config.search), user_attrs=TrialRecord(baseline=True).attrs())
        StudyRecord(mlflow_parent_run_id="the-makers-run").write(made)

    threading.Timer(1.5, the_maker_goes_on).start()
    joined = open_study(config)
    assert [TrialRecord.of(t).baseline for t in joined.trials] == [True]  # one baseline, the maker's
    assert parent_run(config, joined, Tracker(f"sqlite:///{workdir / 'mlflow.db'}")) == "the-makers-run"


@pytest.mark.slow
def test_a_worker_given_only_the_storage_joins_and_fetches_the_trained_base_from_mlflow(tmp_path, patches, monkeypatch):
    from nar_search.search.study.record import StudyRecord, TrialRecord

    here, elsewhere = tmp_path / "first-machine", tmp_path / "second-machine"
    here.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(here)
    journal = f"journal:{here / 'study.journal'}"
    config = study_file(here, patches, storage=journal, search={"phi": [0, 1, 2]}, n_trials=2)
    assert run_cli("study", "run", str(config)) == 0
    study = load(config)
    left = {0.0, 1.0, 2.0} - {t.params["phi"] for t in study.trials}
    study.enqueue_trial({"phi": left.pop()})  # one more point for the second machine
    (here / "runs").rename(here / "runs-not-shared")  # the base's folder is not on the second machine

    monkeypatch.chdir(elsewhere)
    assert run_cli("study", "worker", "--storage", journal, "--keep-local") == 0

    study = load(config)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert TrialRecord.of(study.trials[2]).reused_from is None  # trained here, from the fetched base
    fetched = list((elsewhere / "runs" / "tiny").glob("base-*/model.safetensors"))
    assert len(fetched) == 1
    import hashlib

    assert hashlib.sha256(fetched[0].read_bytes()).hexdigest() == StudyRecord.of(study).base_sha256
    assert (elsewhere / "runs" / "tiny" / "trial-2" / "model.safetensors").is_file()  # --keep-local


def test_a_worker_given_only_a_storage_of_several_studies_is_told_to_name_one(workdir, capsys):
    journal = f"journal:{workdir / 'two.journal'}"
    for name in ("first", "second"):
        optuna.create_study(study_name=name, storage=open_storage(journal))
    assert run_cli("study", "worker", "--storage", journal) == 2
    error = capsys.readouterr().err.strip()
    assert "holds 2 studies (first, second): name one with --name" in error and len(error.splitlines()) == 1


@pytest.mark.skipif(not os.environ.get("CI") and not _postgres_reachable(), reason="PostgreSQL not running (CI starts it)")
def test_a_storage_url_without_its_password_says_where_to_put_it(tmp_path, monkeypatch):
    from sqlalchemy.engine import make_url

    from nar_search.search.errors import StudyConfigError
    from nar_search.search.urls import without_password

    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pgpass either
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    url = without_password(POSTGRES_URL)
    assert make_url(url).password is None
    with pytest.raises(StudyConfigError, match=r"no password supplied: give the password in PGPASSWORD or ~/.pgpass"):
        open_storage(url)
