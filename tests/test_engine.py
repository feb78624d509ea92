"""The study engine's parts with training replaced by a stand-in that scores a network by its
cost, so that samplers, twins and the front publisher are checked in seconds."""

import threading
import time

import optuna
import pytest
from conftest import run_cli
from optuna.trial import TrialState
from test_study import load, study_file

from nar_search.models.cost import spec_cost
from nar_search.models.weights import save_network
from nar_search.search.front.publisher import FrontPublisher
from nar_search.search.study import twins
from nar_search.search.study.record import TrialRecord
from nar_search.search.study.recovery import this_worker
from nar_search.search.tracking import Tracker
from nar_search.search.training_run import CandidateOutcome

ORIGINAL_GFLOPS = 0.1  # a stand-in's reference: AUC falls as a network gets cheaper than this


def stand_in_training(tracker, run_id, spec, data, config, run_dir, **hooks) -> CandidateOutcome:
    """A network 'trained' in no time: saved (a baseline's becomes the base), scored by its GFLOPs."""
    save_network(spec.build(), spec, run_dir)
    gflops = spec_cost(spec).gflops
    auc = 0.9 - 0.02 * max(0.0, ORIGINAL_GFLOPS / gflops - 1)
    tracker.log_metrics(run_id, {"val_auc": auc, "gflops": gflops})
    return CandidateOutcome(run_id, spec, gflops, spec_cost(spec).params, auc, 0.0, auc, 0.0, 1.0, 0.1, config.epochs)


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr("nar_search.search.study.executor.train_in_run", stand_in_training)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["nsga2", "gp", "random", "tpe"])
def test_every_sampler_runs_a_bayes_study_to_a_front(workdir, patches, stand_in, sampler):
    search = {"phi": {"low": 0, "high": 2}, "methods": {"nar": {"alpha": {"low": 1.1, "high": 1.3}, "beta": {"low": 1.05, "high": 1.15}}}}
    config = study_file(workdir, patches, name=f"with-{sampler}", sampler=sampler, search=search, n_trials=6)
    assert run_cli("study", "run", str(config)) == 0
    study = load(config)
    trained = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if TrialRecord.of(t).trained]
    assert len(trained) == 6 and study.best_trials
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_twin_still_training_is_waited_for_and_its_result_reused(monkeypatch):
    monkeypatch.setattr(twins, "POLL_SECONDS", 0.05)
    study = optuna.create_study(directions=["maximize", "minimize"])
    first, second = study.ask(), study.ask()
    for trial in (first, second):
        TrialRecord(worker=this_worker(), architecture="same-network").write(trial)

    def finish_first() -> None:
        time.sleep(0.3)
        TrialRecord(gflops=0.05, params=10, val_auc=0.8, test_auc=0.79, mlflow_run_id="run-of-first").write(first)
        study.tell(first, (0.8, 0.05))

    finisher = threading.Thread(target=finish_first)
    finisher.start()
    twin = twins.trained_twin(study, "same-network", second.number)  # waits: the first is RUNNING on a living worker
    finisher.join()
    assert twin is not None and twin.number == first.number and TrialRecord.of(twin).val_auc == 0.8


def test_a_twin_whose_worker_died_is_not_waited_for():
    study = optuna.create_study(directions=["maximize", "minimize"])
    orphan, mine = study.ask(), study.ask()
    TrialRecord(worker={**this_worker(), "pid": 2**22 + 7}, architecture="same-network").write(orphan)
    assert twins.trained_twin(study, "same-network", mine.number) is None


@pytest.mark.slow
def test_the_front_is_rendered_when_it_changes_not_after_every_trial(tmp_path, monkeypatch):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.client.create_run(tracker.experiment_id("renders")).info.run_id
    rendered = []
    monkeypatch.setattr(tracker, "log_files", lambda run_id, files, path=None: rendered.append(sorted(files)))
    publisher = FrontPublisher("renders", tracker, parent)
    study = optuna.create_study(directions=["maximize", "minimize"])

    def finished(val_auc: float, gflops: float, **record) -> None:
        run_id = tracker.client.create_run(tracker.experiment_id("renders")).info.run_id
        attrs = TrialRecord(
            method="nar", gflops=gflops, params=1, val_auc=val_auc, test_auc=val_auc, mlflow_run_id=run_id, **record
        ).attrs()
        study.add_trial(optuna.trial.create_trial(values=[val_auc, gflops], user_attrs=attrs))
        publisher(study, study.trials[-1])

    finished(0.90, 0.20, baseline=True)
    finished(0.88, 0.10)  # cheaper: joins the front
    finished(0.80, 0.15)  # dominated: the front as it was
    finished(0.85, 0.12)  # dominated
    assert len(rendered) == 2
    publisher.publish(study)  # the run's end: every trained point drawn
    assert len(rendered) == 3 and rendered[-1] == ["pareto.html", "pareto.json", "pareto.png", "trials.json"]
