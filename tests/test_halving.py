"""Successive halving on the Pareto front: the promotion rule on hand-made rung results, and
a small two-worker study in which candidates stop at rungs and none restarts."""

import pytest
from conftest import run_cli
from optuna.trial import TrialState
from test_study import load, study_file

from nar_search.search.front import pareto
from nar_search.search.study.halving import STOPPED_TAG, RungResult, promoted, ranked, rung_epochs
from nar_search.search.tracking import Tracker


@pytest.mark.parametrize(
    ("epochs", "factor", "rungs", "expected"),
    [
        (9, 3, 3, [1, 3, 9]),
        (4, 2, 3, [1, 2, 4]),
        (2, 3, 3, [1, 2]),
        (50, 3, 4, [2, 6, 17, 50]),
    ],
)
def test_rungs_divide_the_budget_by_the_factor(epochs, factor, rungs, expected):
    assert rung_epochs(epochs, factor, rungs) == expected


def results(*points: tuple[float, float]) -> list[RungResult]:
    return [RungResult(trial, auc, gflops) for trial, (auc, gflops) in enumerate(points)]


def test_a_dominated_candidate_stops_and_a_non_dominated_one_goes_on():
    rung = results((0.80, 1.0), (0.70, 2.0), (0.60, 0.5))  # 1 is dominated by 0; 2 is the cheapest
    assert promoted(rung[0], rung, factor=3)
    assert not promoted(rung[1], rung, factor=3)
    assert promoted(rung[2], rung, factor=3)  # worse AUC, but nothing cheaper beats it


def test_the_first_candidate_at_a_rung_goes_on():
    only = results((0.51, 3.0))
    assert promoted(only[0], only, factor=3)


def test_dominated_candidates_fill_the_quota_by_front_then_crowding():
    # Front 0: trials 0 and 1. Front 1: trials 2, 3, 4 (3 in the middle, the least isolated).
    # Six results, factor 2: the best three go on, so the second front's two ends fill it.
    rung = results((0.90, 1.0), (0.95, 3.0), (0.80, 1.5), (0.85, 2.5), (0.90, 4.0), (0.50, 5.0))
    order = [r.trial for r in ranked(rung)]
    assert order[:2] == [0, 1] or order[:2] == [1, 0]
    assert order[2:4] in ([2, 4], [4, 2]) and order[4:] == [3, 5]
    assert promoted(rung[2], rung, factor=2) and not promoted(rung[3], rung, factor=2)
    assert not promoted(rung[3], rung, factor=3)  # quota 2: the front alone


@pytest.mark.slow
def test_a_two_worker_study_stops_candidates_at_rungs_and_never_restarts_one(workdir, patches, capsys):
    config = study_file(
        workdir,
        patches,
        name="halving",
        workers=2,
        n_trials=7,
        storage=f"journal:{workdir / 'study.journal'}",
        training={"epochs": 4, "batch_size": 24, "patience": None, "accelerator": "cpu"},
        search={"phi": [0, 0.5, 1, 1.5, 2], "methods": ["nar", "ir"]},
        pruner="halving",
        halving={"factor": 2, "rungs": 3},
    )
    assert run_cli("study", "run", str(config)) == 0
    study = load(config)
    candidates = [t for t in study.trials if not t.user_attrs.get("baseline") and "reused_from" not in t.user_attrs]
    stopped = [t for t in candidates if t.state == TrialState.PRUNED]
    finished = [t for t in candidates if t.state == TrialState.COMPLETE]
    assert stopped and finished, [(t.number, t.state, t.user_attrs.get("rungs")) for t in candidates]
    for trial in candidates:
        rungs = trial.user_attrs["rungs"]
        assert [r["epochs"] for r in rungs] == [1, 2][: len(rungs)]  # each rung judged once: none promoted twice
        assert all(r["promoted"] for r in rungs[:-1])
    for trial in stopped:  # trained up to its rung, once: never restarted
        assert trial.user_attrs["epochs"] == trial.user_attrs["stopped_at_rung"] == trial.user_attrs["rungs"][-1]["epochs"]
        assert not trial.user_attrs["rungs"][-1]["promoted"]
    for trial in finished:
        assert trial.user_attrs["epochs"] == 4 and all(r["promoted"] for r in trial.user_attrs["rungs"])

    front = {row.trial for row in pareto.pareto_rows(study)}
    assert front and not front & {t.number for t in stopped}
    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}")
    run = tracker.client.get_run(stopped[0].user_attrs["mlflow_run_id"])
    assert run.data.tags[STOPPED_TAG] == str(stopped[0].user_attrs["stopped_at_rung"])
    history = tracker.client.get_metric_history(run.info.run_id, "rung_val_auc")
    assert [m.step for m in history] == [r["epochs"] for r in stopped[0].user_attrs["rungs"]]

    capsys.readouterr()
    assert run_cli("study", "status", str(config)) == 0
    reached = capsys.readouterr().out
    assert f"{len(candidates)} at 1 epoch" in reached


def test_hypervolume_counts_each_dominated_area_once():
    reference = (1.0, 0.5)
    assert pareto.hypervolume([(0.5, 0.9)], reference) == pytest.approx(0.5 * 0.4)
    # A second point adds only what the first does not cover; a dominated one adds nothing.
    two = pareto.hypervolume([(0.5, 0.9), (0.2, 0.7)], reference)
    assert two == pytest.approx(0.3 * 0.2 + 0.5 * 0.4)
    assert pareto.hypervolume([(0.5, 0.9), (0.2, 0.7), (0.6, 0.8)], reference) == pytest.approx(two)
    assert pareto.hypervolume([(1.0, 0.95), (0.3, 0.4)], reference) == 0.0  # at or beyond the reference
