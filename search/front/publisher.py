"""The front where users look for it: `pareto` tags on the trials' MLflow runs, the parent run's
Pareto artifacts (the confirmed front's beside the single-seed one) and the experiment's
description, and the study's counts and compute as parent metrics."""

from __future__ import annotations

import json
import warnings
from typing import Any

import optuna
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial, TrialState

from nar_search.search.front import pareto
from nar_search.search.front.plots import pareto_html, pareto_markdown, pareto_png
from nar_search.search.study.compute import study_compute
from nar_search.search.study.record import StudyRecord, TrialRecord, recorded
from nar_search.search.study.status import infeasible_draws
from nar_search.search.tracking import Tracker, run_link


class FrontPublisher:
    """Called after every trial (an Optuna callback): tags and counts each time; the artifacts
    only when the front changed, and once more, with every trained point, at `publish`."""

    def __init__(self, name: str, tracker: Tracker, parent_run_id: str) -> None:
        self.name, self.tracker, self.parent_run_id = name, tracker, parent_run_id
        self._published: list[list[dict[str, Any]]] | None = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """After each trial: a tracking server that fails here fails no trial and stops no worker
        (Optuna raises a callback's error out of the study); the front is published again after
        the next trial, and when the study ends."""
        try:
            self._after_trial(study, trial)
        except MlflowException as error:
            warnings.warn(f"the front was not published after trial {trial.number}: {str(error).splitlines()[0][:200]}", stacklevel=1)

    def _after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        front = pareto.front(study)
        on_front = {recorded(TrialRecord.of(t).mlflow_run_id) for t in front}
        previous = set(StudyRecord.of(study).pareto_trials or [])
        for run_id in previous ^ on_front:
            self.tracker.set_tags(run_id, {"pareto": str(run_id in on_front).lower()})
        StudyRecord(pareto_trials=sorted(on_front)).write(study)
        if (trial_run := TrialRecord.of(trial).mlflow_run_id) and trial.state != TrialState.COMPLETE:
            self.tracker.set_tags(trial_run, {"optuna.state": trial.state.name})
        self._log_counts(study, len(front))
        self.publish(study, only_if_changed=True)

    def publish(self, study: optuna.Study, only_if_changed: bool = False) -> None:
        """The parent run's Pareto artifacts and the experiment's description, as the study stands."""
        experiment_id = self.tracker.experiment_id(self.name)
        trials = study.get_trials(deepcopy=False)
        points = [_point(row, trials[row.trial], experiment_id) for row in pareto.pareto_rows(study, every_trial=True)]
        front = [point for point in points if point["pareto"]]
        confirmed = [point for point in points if point["confirmed_front"]]
        self.tracker.log_metrics(self.parent_run_id, study_compute(study).as_metrics(), step=len(trials))
        if only_if_changed and [front, confirmed] == self._published:
            return
        title = f"{self.name}: val AUC vs GFLOPs ({len(points)} trained)"
        self.tracker.log_files(
            self.parent_run_id,
            {
                "pareto.json": json.dumps(front, indent=2),
                "trials.json": json.dumps(points, indent=2),
                "pareto.png": pareto_png(points, front, title),
                "pareto.html": pareto_html(points, front, title),
                **({"confirmed_front.json": json.dumps(confirmed, indent=2)} if confirmed else {}),
            },
        )
        link = run_link(experiment_id, self.parent_run_id)
        self.tracker.describe_experiment(
            self.name, pareto_markdown(front, title, link, confirmed, baseline=next((p for p in points if p["baseline"]), None))
        )
        self._published = [front, confirmed]

    def _log_counts(self, study: optuna.Study, front_size: int) -> None:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        self.tracker.log_metrics(
            self.parent_run_id,
            {
                "trials_complete": states.count(TrialState.COMPLETE),
                "trials_pruned": states.count(TrialState.PRUNED),
                "trials_failed": states.count(TrialState.FAIL),
                "infeasible_draws": infeasible_draws(study),
                "pareto_size": front_size,
            },
            step=len(states),
        )


def _point(row: pareto.TrialRow, trial: FrozenTrial, experiment_id: str) -> dict[str, Any]:
    """A trial as the Pareto views show it: its row, what hovering tells, and its run's link."""
    record = TrialRecord.of(trial)
    return row.as_dict() | {
        "label": record.label or row.method,  # trials recorded before labels were kept: their method
        "val_auc_std": record.val_auc_std,
        "test_auc_std": record.test_auc_std,
        "latency_ms": record.latency_ms,
        "run_link": run_link(experiment_id, row.mlflow_run_id),
    }
