"""Confirmation: the front's points trained again over more seeds, each missing seed once,
resumably; the confirmed front (mean ± sd) beside the single-seed one, and `select` from it."""

import json
import random
import statistics

import optuna
import pytest
import yaml
from conftest import run_cli
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from test_study import load, study_file

from nar_search.search.front import pareto
from nar_search.search.front.seeds import pooled, seed_figures
from nar_search.search.study import executor
from nar_search.search.study.confirmation import pending_seeds
from nar_search.search.study.record import SeedRecord, StudyRecord, TrialRecord
from nar_search.search.tracking import Tracker


def test_pooled_figures_equal_those_of_all_values_together():
    rng = random.Random(0)
    for _ in range(50):
        groups = [[rng.random() for _ in range(rng.randint(1, 4))] for _ in range(rng.randint(1, 4))]
        mean, sd = pooled([(len(g), statistics.fmean(g), statistics.pstdev(g)) for g in groups])
        values = [v for g in groups for v in g]
        assert mean == pytest.approx(statistics.fmean(values)) and sd == pytest.approx(statistics.pstdev(values), abs=1e-7)


def _trial(study: optuna.Study, phi: float, val_auc: float, gflops: float, **record) -> None:
    figures = {"val_auc": val_auc, "test_auc": val_auc, "gflops": gflops, "val_auc_std": 0.0, "test_auc_std": 0.0}
    attrs = TrialRecord(method="nar", **figures, **record).attrs()
    study.add_trial(
        create_trial(values=[val_auc, gflops], params={"phi": phi}, distributions={"phi": FloatDistribution(0, 3)}, user_attrs=attrs)
    )


def _seed(study: optuna.Study, trial: int, seed: int, val_auc: float) -> None:
    SeedRecord(trial, seed, val_auc=val_auc, test_auc=val_auc, gflops=1.0, epochs=1, seconds=1.0).write(study)


def test_confirmation_works_through_the_front_as_the_seeds_change_it():
    study = optuna.create_study(directions=["maximize", "minimize"])
    StudyRecord(config={"training": {"seeds": 1}}).write(study)
    _trial(study, 0, 0.95, 1.0, baseline=True)
    _trial(study, 1, 0.96, 0.5)  # lucky on its one seed
    _trial(study, 2, 0.94, 0.6)  # behind it, off the front
    _trial(study, 3, 0.80, 0.1)
    _trial(study, 0, 0.95, 1.0, reused_from=0)  # a ϕ = 0 draw: the base again, never trained again
    pending = [(trial.number, seed) for trial, seed in pending_seeds(study, range(1, 3), None)]
    assert pending == [(3, 1), (3, 2), (1, 1), (1, 2)]  # cheapest first; not the baseline, not trial 2
    assert pending_seeds(study, range(1, 3), max_auc_drop=0.01) == [(study.trials[1], 1), (study.trials[1], 2)]

    _seed(study, 1, 1, 0.90)  # trial 1's seeds bring its mean below trial 2's
    _seed(study, 1, 2, 0.90)
    assert [(t.number, s) for t, s in pending_seeds(study, range(1, 3), 0.1)] == [(2, 1), (2, 2)]
    assert seed_figures(study, [study.trials[1]])[1].val_auc == pytest.approx((0.96 + 0.9 + 0.9) / 3)

    # a seed another living worker trains is left to it; one whose worker is gone is trained again
    SeedRecord(2, 1, worker={"host": "elsewhere", "pid": 1, "started": "1"}).write(study)
    SeedRecord(2, 2, worker={"host": __import__("socket").gethostname(), "pid": 2**22 + 1, "started": "1"}).write(study)
    assert [(t.number, s) for t, s in pending_seeds(study, range(1, 3), 0.1)] == [(2, 2)]


def test_select_prefers_confirmed_points_by_their_mean():
    study = optuna.create_study(directions=["maximize", "minimize"])
    StudyRecord(config={"training": {"seeds": 1}}).write(study)
    _trial(study, 0, 0.95, 1.0, baseline=True)
    _trial(study, 1, 0.96, 0.2)
    _trial(study, 2, 0.95, 0.5)
    assert pareto.select(study, 0.005).trial == 1 and not pareto.select(study, 0.005).confirmed
    for seed, auc in ((1, 0.90), (2, 0.91)):
        _seed(study, 1, seed, auc)
        _seed(study, 2, seed, 0.95)
    StudyRecord(confirm_seeds=3).write(study)
    chosen = pareto.select(study, 0.005)
    assert chosen.trial == 2 and chosen.confirmed and chosen.seeds == 3 and chosen.mean_val_auc == pytest.approx(0.95)
    assert [row.trial for row in pareto.pareto_rows(study) if row.confirmed_front] == [1, 2, 0]  # 1: cheapest, whatever its mean


@pytest.mark.slow
def test_a_study_confirms_its_front_and_confirm_adds_only_the_missing_seeds(workdir, patches, capsys, monkeypatch):
    config = study_file(workdir, patches, name="confirmed", confirm={"seeds": 2})
    assert run_cli("study", "run", str(config)) == 0
    study = load(config)
    seeds = SeedRecord.all_of(study)
    assert seeds and all(s.done and s.seed == 1 for s in seeds)
    assert len({(s.trial, s.seed) for s in seeds}) == len(seeds)
    confirmed_front = pareto.confirmed_front(study)
    assert all(TrialRecord.of(t).baseline or t.number in {s.trial for s in seeds} for t in confirmed_front)

    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = tracker.client.search_runs([tracker.experiment_id("confirmed")])
    assert all(run.info.status == "FINISHED" for run in runs)
    confirming = [r for r in runs if "nar.confirms_trial" in r.data.tags]
    assert sorted((int(r.data.tags["nar.confirms_trial"]), int(r.data.tags["seed"])) for r in confirming) == sorted(
        (s.trial, s.seed) for s in seeds
    )
    trial_run = tracker.client.get_run(TrialRecord.of(study.trials[seeds[0].trial]).mlflow_run_id)
    assert trial_run.data.metrics["seeds"] == 2 and "mean_test_auc" in trial_run.data.metrics

    capsys.readouterr()
    assert run_cli("study", "select", str(config), "--max-auc-drop", "1.0", "--json") == 0
    chosen = json.loads(capsys.readouterr().out)
    assert chosen["confirmed"] and (chosen["seeds"] == 2 or chosen["baseline"])

    assert run_cli("study", "status", str(config)) == 0
    assert "confirmed front" in capsys.readouterr().out

    # `nar study confirm` to 3 seeds: a stop in the middle, then a resume that trains each missing seed once
    trained = []
    confirm = executor.TrialExecutor.confirm

    def stopped_second(self, request, run_id, seed):
        trained.append((request.number, seed))
        if len(trained) == 2:
            raise KeyboardInterrupt
        return confirm(self, request, run_id, seed)

    monkeypatch.setattr(executor.TrialExecutor, "confirm", stopped_second)
    assert run_cli("study", "confirm", str(config), "--seeds", "3") == 130
    assert StudyRecord.of(load(config)).confirm_seeds == 2  # confirmed over 3 only once every seed is in
    monkeypatch.setattr(
        executor.TrialExecutor,
        "confirm",
        lambda self, request, run_id, seed: trained.append((request.number, seed)) or confirm(self, request, run_id, seed),
    )
    assert run_cli("study", "confirm", str(config), "--seeds", "3") == 0
    assert len(trained) == len(set(trained)) + 1 and trained[1] == trained[2]  # only the stopped seed twice
    study = load(config)
    done = [(s.trial, s.seed) for s in SeedRecord.all_of(study) if s.done]
    assert len(done) == len(set(done)) and {seed for _, seed in done} == {1, 2}
    assert all(row.seeds == 3 for row in pareto.pareto_rows(study) if row.confirmed_front and not row.baseline)
    statuses = [r.info.status for r in tracker.client.search_runs([tracker.experiment_id("confirmed")])]
    assert statuses.count("KILLED") == 1 and "RUNNING" not in statuses
    assert all(t.state == TrialState.COMPLETE for t in study.trials)

    # seeds are pooled only if they trained alike: a study file whose training changed is refused
    changed = yaml.safe_load(config.read_text())
    changed["training"]["lr"] = 0.1
    config.write_text(yaml.safe_dump(changed))
    capsys.readouterr()
    assert run_cli("study", "confirm", str(config), "--seeds", "4") == 2
    assert "training differs from the one study confirmed ran with (lr)" in capsys.readouterr().err


def test_a_studys_compute_counts_every_training_once_weighted_by_its_cost():
    from nar_search.search.study.compute import study_compute

    study = optuna.create_study(directions=["maximize", "minimize"])
    _trial(study, 0, 0.95, 1.0, baseline=True, epochs=4, seconds=40.0)  # the base the study trained
    _trial(study, 1, 0.90, 0.5, epochs=2, seconds=10.0)
    _trial(study, 2, 0.90, 0.5, epochs=2, seconds=10.0, reused_from=1)  # costs nothing
    _trial(study, 3, 0.80, 0.2, epochs=1, seconds=2.0, training_gflops=1.0)  # ResRep: trained at the full cost
    _seed(study, 1, 1, 0.9)
    SeedRecord(3, 1, worker={"pid": 1}).write(study)  # never finished: recorded nothing
    compute = study_compute(study)
    assert (compute.trainings, compute.epochs, compute.seconds) == (4, 8, 53.0)
    assert compute.gflop_epochs == pytest.approx(4 * 1.0 + 2 * 0.5 + 1 * 1.0 + 1 * 0.5)


def test_a_seed_whose_worker_died_has_its_run_ended_killed(tmp_path):
    import socket

    from nar_search.search.study.confirmation import end_abandoned

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    study = optuna.create_study()
    runs = [tracker.client.create_run(tracker.experiment_id("s")).info.run_id for _ in range(2)]
    dead = {"host": socket.gethostname(), "pid": 2**22 + 1, "started": "1"}
    SeedRecord(1, 1, worker=dead, mlflow_run_id=runs[0]).write(study)  # killed with -9 mid-training
    SeedRecord(1, 2, worker={"host": "elsewhere", "pid": 1}, mlflow_run_id=runs[1]).write(study)  # alive, as far as we know
    assert [(s.trial, s.seed) for s in end_abandoned(study, tracker)] == [(1, 1)]
    assert [tracker.client.get_run(run).info.status for run in runs] == ["KILLED", "RUNNING"]
    assert tracker.client.get_run(runs[0]).data.tags["failure_reason"] == "its worker stopped without ending it"


def test_of_two_workers_that_claim_one_seed_at_once_only_the_last_to_write_trains_it(monkeypatch):
    from nar_search.search.study import confirmation

    study = optuna.create_study()
    other = {"host": "node-7", "pid": 12, "started": "1"}

    def the_other_claims_meanwhile(seconds):
        SeedRecord(3, 1, worker=other).write(study)

    monkeypatch.setattr(confirmation.time, "sleep", the_other_claims_meanwhile)
    assert not confirmation.claimed(study, 3, 1)
    monkeypatch.setattr(confirmation.time, "sleep", lambda seconds: None)
    assert confirmation.claimed(study, 3, 2)  # nobody else: held
