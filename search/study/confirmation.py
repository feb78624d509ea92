"""Confirmation: the front's points trained again with more seeds, so that the front a user
chooses from is not the luck of one seed.

It works through the front as the seeds change it: the front by each point's val AUC over its
seeds so far, each of its points trained until it has the study's `confirm.seeds`, cheapest
first; a point that falls back when confirmed may let another onto the front, which is then
confirmed in turn. Each seed is a child run of the study's parent run and a `SeedRecord`,
written when it starts and when it ends, so a stopped confirmation resumes where it was and
trains no seed twice; one that a dead worker left is trained again, its run ended KILLED."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import optuna
from mlflow.entities import RunStatus
from optuna.trial import FrozenTrial

from nar_search.search.config import StudyConfig
from nar_search.search.errors import StudyConfigError
from nar_search.search.front import pareto
from nar_search.search.front.seeds import own_seeds, seed_figures, source
from nar_search.search.study import space
from nar_search.search.study.bases import BaseProvider
from nar_search.search.study.executor import TrialExecutor
from nar_search.search.study.record import SeedRecord, StudyRecord, TrialRecord, recorded
from nar_search.search.study.recovery import this_worker, worker_alive
from nar_search.search.study.storage import is_sqlite
from nar_search.search.study.trial import TrialRequest
from nar_search.search.tracking import Tracker

CONFIRMS_TAG = "nar.confirms_trial"
CLAIM_SECONDS = 2.0  # between writing a claim and reading who holds it: longer than any storage round trip


class Confirmation:
    def __init__(self, config: StudyConfig, study: optuna.Study, tracker: Tracker, parent_run_id: str, bases: BaseProvider) -> None:
        self.config, self.study, self.tracker, self.parent_run_id = config, study, tracker, parent_run_id
        self.original = bases.original
        self.executor = TrialExecutor(config, study, tracker, bases)
        first = config.training.seed + own_seeds(study)
        self.seeds = range(first, config.training.seed + config.confirm.seeds)

    def pending(self) -> list[tuple[FrozenTrial, int]]:
        return pending_seeds(self.study, self.seeds, self.config.confirm.max_auc_drop)

    def run(self, on_seed: Callable[[SeedRecord], None] = lambda seed: None) -> int:
        """Trains the pending seeds until none is left; returns how many it trained. The study
        counts as confirmed over `confirm.seeds` only then: until then, what it was before."""
        self._check_training()
        end_abandoned(self.study, self.tracker)
        count = 0
        while todo := self.pending():
            trial, seed = todo[0]
            # On SQLite this worker is alone; elsewhere another may hold the seed, and pending() then leaves it out.
            if is_sqlite(self.config.storage_url) or claimed(self.study, trial.number, seed):
                on_seed(self.train(trial, seed))
                count += 1
        if self.config.confirm.seeds > 1:
            StudyRecord(confirm_seeds=self.config.confirm.seeds).write(self.study)
        return count

    def train(self, trial: FrozenTrial, seed: int) -> SeedRecord:
        """One more seed of `trial`'s network, as its trial trained it, in a child run of the study."""
        request = self._request(trial)
        tags = {"optuna.study": self.config.name, CONFIRMS_TAG: str(trial.number), "seed": str(seed), "method": request.method.name}
        with self.tracker.run(self.config.name, f"{request.run_name} · seed {seed}", tags, self.parent_run_id) as run_id:
            claim = SeedRecord(trial.number, seed, worker=this_worker(), mlflow_run_id=run_id)
            claim.write(self.study)
            try:
                outcome = self.executor.confirm(request, run_id, seed)
            except BaseException:
                SeedRecord(trial.number, seed).write(self.study)  # released: any worker may train it again
                raise
        done = replace(
            claim,
            val_auc=outcome.val_auc,
            test_auc=outcome.test_auc,
            gflops=outcome.gflops,
            epochs=outcome.epochs,
            seconds=outcome.seconds,
        )
        done.write(self.study)
        self._log_on_trial(trial)
        return done

    def _check_training(self) -> None:
        """A point's seeds are pooled: they must train as its trial did, from the study file it ran with."""
        recorded = (StudyRecord.of(self.study).config or {}).get("training", {})
        now = self.config.training.model_dump(mode="json")
        differ = sorted(key for key in recorded.keys() & now.keys() if recorded[key] != now[key])
        if differ:
            raise StudyConfigError(
                f"the study file's training differs from the one study {self.config.name} ran with ({', '.join(differ)}): "
                "confirm it with the file it ran with"
            )

    def _request(self, trial: FrozenTrial) -> TrialRequest:
        """The trial's candidate drawn again from its parameters: the same network, or a clear error."""
        fixed = optuna.trial.FixedTrial(trial.params, trial.number)
        try:
            method, candidate = space.suggest(fixed, self.config.search, self.original)
        except ValueError:  # a parameter that this file's search space no longer has
            candidate = None
        request = TrialRequest(fixed, method, candidate, baseline=False) if candidate is not None else None
        if request is None or request.architecture != TrialRecord.of(trial).architecture:
            raise StudyConfigError(
                f"trial {trial.number}'s parameters give another network under this study file's search space: "
                "confirm the study with the file it ran with"
            )
        return request

    def _log_on_trial(self, trial: FrozenTrial) -> None:
        """The trial's figures over its seeds so far, on its own run, where its single-seed ones are."""
        figures = seed_figures(self.study, [trial])[trial.number]
        metrics = {
            "seeds": figures.seeds,
            "mean_val_auc": figures.val_auc,
            "val_auc_sd": figures.val_auc_std,
            "mean_test_auc": figures.test_auc,
            "test_auc_sd": figures.test_auc_std,
        }
        self.tracker.log_metrics(recorded(TrialRecord.of(trial).mlflow_run_id), metrics, step=figures.seeds)


def end_abandoned(study: optuna.Study, tracker: Tracker) -> list[SeedRecord]:
    """Seeds whose worker died while training them: their runs end KILLED, and they train again."""
    abandoned = [seed for seed in SeedRecord.all_of(study) if not seed.done and worker_alive(seed.worker or {}) is False]
    for seed in abandoned:
        if seed.mlflow_run_id and tracker.client.get_run(seed.mlflow_run_id).info.status == "RUNNING":
            tracker.client.set_tag(seed.mlflow_run_id, "failure_reason", "its worker stopped without ending it")
            tracker.client.set_terminated(seed.mlflow_run_id, RunStatus.to_string(RunStatus.KILLED))
    return abandoned


def pending_seeds(study: optuna.Study, seeds: range, max_auc_drop: float | None) -> list[tuple[FrozenTrial, int]]:
    """The seeds to train now, cheapest point first: those of `seeds` that the points of the
    front (by val AUC over their seeds so far) still lack, within `max_auc_drop` of the
    baseline's val AUC, but for those another living worker trains."""
    reference = pareto.baseline(study)
    if reference is None or not seeds:
        return []
    candidates = [t for t in pareto.trained(study) if pareto.feasible(t)]
    figures = seed_figures(study, candidates)
    floor = recorded(TrialRecord.of(reference).val_auc) - max_auc_drop if max_auc_drop is not None else -1.0
    started = {(seed.trial, seed.seed): seed for seed in SeedRecord.all_of(study)}
    trials = study.get_trials(deepcopy=False)
    todo: dict[tuple[int, int], tuple[FrozenTrial, int]] = {}
    for trial in pareto.nondominated(candidates, pareto.seed_points(candidates, figures)):
        trained_by = trials[source(trial)]
        # The base is the reference as it is (a ϕ = 0 draw reuses it): never trained again.
        if TrialRecord.of(trained_by).baseline or figures[trial.number].val_auc < floor:
            continue
        for seed in seeds:
            record = started.get((trained_by.number, seed))
            if record is None or not (record.done or _trained_elsewhere(record)):
                todo.setdefault((trained_by.number, seed), (trained_by, seed))
    return list(todo.values())


def claimed(study: optuna.Study, trial: int, seed: int) -> bool:
    """Whether this worker holds the seed: its claim written, then read back a moment later. A
    study attribute has no compare-and-set, so of workers that claim one seed at once the last
    to write holds it, and the others, reading another's claim, go on to another seed."""
    SeedRecord(trial, seed, worker=this_worker()).write(study)
    time.sleep(CLAIM_SECONDS)
    holder = next((s for s in SeedRecord.all_of(study) if (s.trial, s.seed) == (trial, seed)), None)
    return holder is not None and holder.worker == this_worker()


def _trained_elsewhere(seed: SeedRecord) -> bool:
    """A seed that another worker, alive or on another host, is training now (a released one has no worker)."""
    return seed.worker is not None and seed.worker != this_worker() and worker_alive(seed.worker) is not False
