"""A NAR Search study: Optuna over reduction parameters, each trial a trained network
recorded as a child MLflow run of the study's parent run, the Pareto front kept current."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nar_search.lightning_modules.distillation import TeacherTargets
from nar_search.lightning_modules.errors import TrainingError
from nar_search.lightning_modules.rungs import Rungs
from nar_search.lightning_modules.settings import TrainingConfig
from nar_search.models.base_network import BaseNetwork, load_base
from nar_search.models.cost import spec_cost
from nar_search.models.errors import ModelError
from nar_search.models.init_modes import get_init_mode
from nar_search.models.reduce import PAPER_COEFFICIENTS, input_reduce
from nar_search.models.registry import original_spec
from nar_search.models.spec import ArchSpec, Reduction
from nar_search.search import pareto, space
from nar_search.search.config import StudyConfig, StudyConfigError
from nar_search.search.halving import STOPPED_TAG, rungs_callback
from nar_search.search.interrupts import Interrupted
from nar_search.search.methods import Candidate, ReductionMethod, get_method
from nar_search.search.plots import pareto_html, pareto_markdown, pareto_png
from nar_search.search.record import StudyRecord, TrialRecord
from nar_search.search.recovery import RECOVERY_SECONDS, awaiting_retry, requeue, this_worker, worker_gone
from nar_search.search.status import COUNTED_STATES, counted, infeasible_draw, infeasible_draws
from nar_search.search.storage import check_parallel, open_storage
from nar_search.search.tracking import STOPPED_EARLY_TAG, Tracker, run_link
from nar_search.search.training_run import CandidateOutcome, DataSettings, evaluate_and_record, train_and_record
from nar_search.search.urls import hide_password

INFEASIBLE_DRAWS_PER_TRIAL = 10  # beyond that many per trial asked for, a study stops short: its space is too wide
OBJECTIVE_NAMES = ("val_auc", "gflops")  # a Pareto study's objectives, as dashboards show them; a budget study has the first
POLL_SECONDS = 2.0
BUDGET_CONSTRAINT = "gflops_over_budget"


def architecture_key(spec: ArchSpec) -> str:
    """Equal for candidates that round to the same network at the same input side."""
    shape = spec.replace(reduction=Reduction()).to_json(indent=None)
    return hashlib.sha1(shape.encode()).hexdigest()[:16]


class EnqueueSafeGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler stops a worker only once the grid is finished, so a worker that ends
    its trial while another still trains the last point starts one more trial, on a point drawn
    again. Here a worker stops as soon as every point is started (finished or running
    elsewhere); what is left (a retry, a point whose worker died) is for the study's next
    round. It also serves the enqueued trials (the baseline, retries), which have no grid id."""

    def __init__(self, search_space: Mapping[str, Sequence[Any]], seed: int | None = None) -> None:
        super().__init__(search_space, seed)
        self.points = math.prod(len(values) for values in search_space.values())

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: list[float] | None) -> None:
        trials = study.get_trials(deepcopy=False)
        started = {t.system_attrs["grid_id"] for t in trials if "grid_id" in t.system_attrs and t.state != TrialState.WAITING}
        if started >= set(range(self.points)):
            study.stop()


def make_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    seed = config.sampler_seed
    if config.sampler == "grid":
        return EnqueueSafeGridSampler(space.grid_search_space(config.search), seed=seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(4, config.workers * 2), seed=seed)
    # A third of a small study's trials, at most Optuna's ten, are random before the model guides.
    startup = max(2, min(10, config.n_trials // 3))
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    # Parallel workers (each runs with workers = 1): a running trial counts as a poor result, so they spread out.
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=startup,
        multivariate=True,
        group=True,
        constant_liar=True,
    )


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """Optuna's pruners for budget studies; halving, for Pareto studies, is the rungs' own."""
    if config.objective != "budget" or config.pruner in ("none", "halving"):
        return optuna.pruners.NopPruner()
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.training.epochs)
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


def given_base(config: StudyConfig) -> BaseNetwork | None:
    """The study file's base network, read and checked before anything is written."""
    return load_base(config.base, config.model, config.input_size) if config.base else None


def original_network(config: StudyConfig, base: BaseNetwork | None) -> ArchSpec:
    """The network the study reduces: the given base's, else the model at the study's input side."""
    return base.spec if base else original_spec(config.model, config.input_size)


def check_largest_phi(config: StudyConfig, original: ArchSpec) -> None:
    """A ϕ that collapses the input would fail its trials one by one: refuse it up front."""
    search = config.search
    largest = search.phi.high if search.space == "bayes" else max(search.phi_values)
    try:
        input_reduce(original, largest, PAPER_COEFFICIENTS[2])
    except ModelError as error:
        raise StudyConfigError(f"search.phi: the largest ϕ ({largest:g}) is too large: {error}") from None


def open_study(config: StudyConfig, base: BaseNetwork | None = None) -> optuna.Study:
    """Creates the study, or loads it to resume; a new study gets the ϕ = 0 baseline first."""
    check_parallel(config.storage_url, config.workers)
    check_largest_phi(config, original_network(config, base))
    directions = ["maximize", "minimize"] if config.objective == "pareto" else ["maximize"]
    study = optuna.create_study(
        study_name=config.name,
        storage=open_storage(config.storage_url),
        sampler=make_sampler(config),
        pruner=make_pruner(config),
        directions=directions,
        load_if_exists=True,
    )
    if study.metric_names is None:  # new, or made before its objectives were named
        study.set_metric_names(list(OBJECTIVE_NAMES[: len(directions)]))
    if not study.trials:
        study.enqueue_trial(space.baseline_params(config.search), user_attrs=TrialRecord(baseline=True).attrs())
        StudyRecord(config=config.masked()).write(study)
    return study


def trial_run_name(number: int, label: str) -> str:
    """A trial's MLflow run name: its number and its candidate, e.g. `trial 4 · nar ϕ2 α1.2 β1.1 γ1.15`."""
    return f"trial {number} · {label}"


def _needs_base(config: TrainingConfig) -> bool:
    return get_init_mode(config.init).needs_base or config.distill is not None


@dataclass
class StudyRunner:
    """What each trial needs: the config, the base network (given, or trained by the baseline
    trial), tracking and the parent run."""

    config: StudyConfig
    study: optuna.Study
    tracker: Tracker
    progress: bool = False
    base: BaseNetwork | None = None  # the study file's base; else the baseline's, once trained

    def __post_init__(self) -> None:
        self.original = original_network(self.config, self.base)
        self.original_gflops = spec_cost(self.original).gflops
        self.parent_run_id = self._parent_run()
        self.base = self.base or self._stored_base()
        self._teacher: TeacherTargets | None = None

    def _parent_run(self) -> str:
        run_id = StudyRecord.of(self.study).mlflow_parent_run_id
        if run_id is None:
            experiment = self.tracker.experiment_id(self.config.name)
            run = self.tracker.client.create_run(experiment, run_name=f"study {self.config.name}", tags={"nar.role": "study"})
            run_id = run.info.run_id
            self.tracker.log_params(
                run_id,
                {
                    "model": self.config.model,
                    "space": self.config.search.space,
                    "sampler": self.config.sampler,
                    "objective": self.config.objective,
                    "n_trials": self.config.n_trials,
                    "storage": hide_password(self.config.storage_url),
                    "methods": space.methods(self.config.search),
                },
            )
            self.tracker.log_files(run_id, {"study_config.json": json.dumps(self.config.masked(), indent=2)})
            StudyRecord(mlflow_parent_run_id=run_id).write(self.study)
        return run_id

    def run_trial(self, trial: optuna.Trial) -> float | tuple[float, float]:
        """The objective as Optuna runs it: the trial claims its worker first, and a stop
        (Ctrl-C, SIGTERM) reaches Optuna as the KeyboardInterrupt it fails a trial on."""
        TrialRecord(worker=this_worker()).write(trial)
        try:
            values = self.objective(trial)
        except Interrupted as stop:
            raise KeyboardInterrupt(str(stop)) from stop
        self._complete_constraints(trial)
        return values

    def _complete_constraints(self, trial: optuna.Trial) -> None:
        """Every constraint of the study set in every trial, as feasible (0) where the trial
        did not reach it (a γ < 1 draw never measures its input side; another method's trial
        has no γ): the GP sampler refuses trials whose constraint names differ."""
        names = {name for method in space.methods(self.config.search) for name in get_method(method).constraints}
        if self.config.objective == "budget":
            names.add(BUDGET_CONSTRAINT)
        for name in names - set(trial.constraints):
            trial.set_constraint(name, 0.0)

    def objective(self, trial: optuna.Trial) -> float | tuple[float, float]:
        method = space.suggest_method(trial, self.config.search)
        candidate = method.suggest(trial, self.config.search, self.original)
        TrialRecord(method=method.name).write(trial)
        if candidate is None:  # infeasible: recorded by its constraint, nothing to train
            return self._values(0.0, self.original_gflops)
        self._describe(trial, method, candidate)
        if self.config.objective == "budget":
            self._check_budget(trial, method, candidate)
        key = architecture_key(candidate.spec) + method.key_suffix(candidate)
        TrialRecord(architecture=key).write(trial)
        twin = self._trained_twin(key, trial.number)
        if twin is not None:
            return self._reuse(trial, twin)
        rungs = self._rungs(trial, method.expected_gflops(candidate))
        training = method.training(candidate)
        run_name = trial_run_name(trial.number, method.label(candidate))
        run_dir = Path("runs") / self.config.name / f"trial-{trial.number}"
        record = {
            "parent_run_id": self.parent_run_id,
            "tags": self._tags(trial, method.name),
            "progress": self.progress,
            "on_run_created": lambda run_id: TrialRecord(mlflow_run_id=run_id).write(trial),
        }
        data, config = DataSettings(**self.config.data.model_dump()), self.config.training.to_training_config()
        if TrialRecord.of(trial).baseline:
            outcome = self._establish_base(run_name, training.spec, data, config, run_dir, record)
        else:
            base = self._await_base(trial) if _needs_base(config) else None
            outcome = train_and_record(
                self.tracker,
                self.config.name,
                run_name,
                training.spec,
                data,
                config,
                run_dir,
                callbacks=[*self._pruning_callbacks(trial), *rungs, *training.callbacks],
                finalize=training.finalize,
                base=base,
                teacher=self._teacher_of(base, config),
                **record,
            )
        TrialRecord.result_of(outcome, spec=outcome.spec.to_dict(), seconds=outcome.seconds, epochs=outcome.epochs).write(trial)
        for rung in rungs:
            if rung.stopped_at is not None:
                self._stop_at_rung(trial, outcome.run_id, rung.stopped_at)
        return self._values(outcome.val_auc, outcome.gflops)

    def _rungs(self, trial: optuna.Trial, gflops: float) -> list[Rungs]:
        """Successive halving's rungs for a Pareto study's candidate (none for the baseline)."""
        if self.config.pruner != "halving" or TrialRecord.of(trial).baseline:
            return []
        TrialRecord(expected_gflops=gflops).write(trial)
        halving = self.config.halving
        return [rungs_callback(self.study, trial, self.tracker, self.config.training.epochs, halving.factor, halving.rungs)]

    def _stop_at_rung(self, trial: optuna.Trial, run_id: str, epochs: int) -> None:
        TrialRecord(stopped_at_rung=epochs).write(trial)
        reason = f"stopped at the {epochs}-epoch rung: dominated by the candidates that reached it"
        self.tracker.set_tags(run_id, {STOPPED_TAG: str(epochs), STOPPED_EARLY_TAG: reason})
        raise optuna.TrialPruned(reason)

    def _establish_base(
        self, run_name: str, spec: ArchSpec, data: DataSettings, config: TrainingConfig, run_dir: Path, record: dict
    ) -> CandidateOutcome:
        """The baseline trial: the given base evaluated as it is, or, without one, the original
        network trained from scratch and kept as the base of every later trial."""
        if self.base is not None:  # given, or trained by an earlier try of this trial: never trained again
            return evaluate_and_record(self.tracker, self.config.name, run_name, self.base, data, config, run_dir, **record)
        config = replace(config, init="scratch", distill=None)
        try:
            outcome = train_and_record(self.tracker, self.config.name, run_name, spec, data, config, run_dir, **record)
        except Exception:
            self.study.stop()  # every later trial starts from the base: none can run without it
            raise
        self.base = load_base(run_dir, self.config.model, self.original.input_size)
        StudyRecord(base_network=str(run_dir.resolve())).write(self.study)
        return outcome

    def _stored_base(self) -> BaseNetwork | None:
        """The base a baseline trial of this study trained, here or on another worker."""
        path = StudyRecord.of(self.study).base_network
        if path is None:
            return None
        if not Path(path).is_dir():
            raise TrainingError(
                f"the study's base network, trained by its baseline, is not at {path}: run this worker "
                "where that folder is (or shared), or give the study a base: file"
            )
        return load_base(Path(path), self.config.model, self.original.input_size)

    def _await_base(self, trial: optuna.Trial) -> BaseNetwork:
        """Later trials start from the base: wait while another worker's baseline trains it. A
        baseline that no worker trains (its worker died, its retry waits in the queue) gets this
        worker: the trial gives way, queued again behind the baseline's retry, before any training.
        A baseline whose worker died is waited for while recovery queues it again."""
        orphan_deadline = None
        while self.base is None:
            self.base = self._stored_base()
            if self.base is not None:
                break
            trials = self.study.get_trials(deepcopy=False)
            baselines = [t for t in trials if TrialRecord.of(t).baseline]
            if any(t.state == TrialState.RUNNING and not worker_gone(t) for t in baselines):
                pass  # another worker trains it
            elif any(t.state == TrialState.WAITING for t in baselines):
                requeue(self.study, next(t for t in trials if t.number == trial.number))
                raise TrainingError(f"trial {trial.number} gave way to the untrained baseline and is queued again")
            elif any(awaiting_retry(t, trials) for t in baselines):
                orphan_deadline = orphan_deadline or time.monotonic() + 2 * RECOVERY_SECONDS
                if time.monotonic() > orphan_deadline:
                    raise TrainingError("the study's baseline lost its worker and nothing queued it again: run the study again to retry it")
            else:
                raise TrainingError("the study's baseline failed, so there is no base to start from: run the study again to retry it")
            time.sleep(POLL_SECONDS)
        return self.base

    def _teacher_of(self, base: BaseNetwork, config: TrainingConfig) -> TeacherTargets | None:
        """One teacher per base for the whole process: its logits are computed once per split."""
        if config.distill is None:
            return None
        if self._teacher is None:
            self._teacher = TeacherTargets(base.build(), base.spec.input_size)
        return self._teacher

    def _check_budget(self, trial: optuna.Trial, method: ReductionMethod, candidate: Candidate) -> None:
        """Over-budget networks are infeasible; all but the baseline (the AUC reference) are
        pruned before they train, each with a FINISHED run that says so, as any early stop."""
        gflops = method.expected_gflops(candidate)
        over = gflops - self.config.gflops_budget
        trial.set_constraint(BUDGET_CONSTRAINT, over)
        if over <= 0 or TrialRecord.of(trial).baseline:
            return
        run_name = trial_run_name(trial.number, method.label(candidate))
        with self.tracker.run(self.config.name, run_name, self._tags(trial, method.name), self.parent_run_id) as run_id:
            TrialRecord(mlflow_run_id=run_id).write(trial)
            raise optuna.TrialPruned(f"{gflops:.3f} GFLOPs is over the budget of {self.config.gflops_budget}")

    def _values(self, auc: float, gflops: float) -> float | tuple[float, float]:
        return (auc, gflops) if self.config.objective == "pareto" else auc

    def _describe(self, trial: optuna.Trial, method: ReductionMethod, candidate: Candidate) -> None:
        TrialRecord(
            settings=method.describe(candidate),
            label=method.label(candidate),
            input_size=candidate.spec.input_size,
            spec=candidate.spec.to_dict(),
        ).write(trial)

    def _tags(self, trial: optuna.Trial, method: str) -> dict[str, str]:
        return {"optuna.study": self.config.name, "optuna.trial_number": str(trial.number), "method": method, "pareto": "false"}

    def _pruning_callbacks(self, trial: optuna.Trial) -> list:
        if self.config.objective != "budget" or self.config.pruner == "none":
            return []
        from optuna_integration import PyTorchLightningPruningCallback

        return [PyTorchLightningPruningCallback(trial, monitor="val_auc")]

    def _trained_twin(self, key: str, number: int) -> FrozenTrial | None:
        """An earlier trial of the same network: its result, once it has one. While another
        (living) worker still trains it, this trial waits rather than train the same network twice."""
        while True:
            twins = [
                other
                for other in self.study.get_trials(deepcopy=False, states=(*COUNTED_STATES, TrialState.RUNNING))
                if other.number != number and TrialRecord.of(other).architecture == key
            ]
            trained = [t for t in twins if _trained_or_stopped(t)]
            if trained:
                return trained[0]
            if not any(t.state == TrialState.RUNNING and t.number < number and not worker_gone(t) for t in twins):
                return None
            time.sleep(POLL_SECONDS)

    def _reuse(self, trial: optuna.Trial, twin: FrozenTrial) -> float | tuple[float, float]:
        """Same network as an earlier trial: its result (or its stop at a rung) is reused and
        recorded as such."""
        # A twin trained before latency was kept has none: None fields are not written.
        result = TrialRecord.of(twin)
        TrialRecord.result_of(result, reused_from=twin.number).write(trial)
        mine = TrialRecord.of(trial)
        tags = self._tags(trial, mine.method) | {"reused_from_trial": str(twin.number), "reused_run_id": result.mlflow_run_id}
        run_name = trial_run_name(trial.number, mine.label)
        with self.tracker.run(self.config.name, run_name, tags, self.parent_run_id) as run_id:
            self.tracker.log_params(run_id, {"method": mine.method, "spec": mine.spec})
            self.tracker.log_metrics(
                run_id, {"gflops": result.gflops, "params": result.params, "val_auc": result.val_auc, "test_auc": result.test_auc}
            )
        TrialRecord(mlflow_run_id=run_id).write(trial)
        if result.stopped_at_rung is not None:
            self._stop_at_rung(trial, run_id, result.stopped_at_rung)
        return self._values(result.val_auc, result.gflops)

    def refresh(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """After every trial: Pareto tags on the child runs and the parent's front artifacts."""
        front = pareto.front(study)
        on_front = {TrialRecord.of(t).mlflow_run_id for t in front}
        previous = set(StudyRecord.of(study).pareto_trials or [])
        for run_id in previous ^ on_front:
            self.tracker.set_tags(run_id, {"pareto": str(run_id in on_front).lower()})
        StudyRecord(pareto_trials=sorted(on_front)).write(study)
        if (run_id := TrialRecord.of(trial).mlflow_run_id) and trial.state != TrialState.COMPLETE:
            self.tracker.set_tags(run_id, {"optuna.state": trial.state.name})
        self.publish(study)

    def publish(self, study: optuna.Study) -> None:
        """The parent run's Pareto artifacts and the experiment's description, as the study stands."""
        experiment_id = self.tracker.experiment_id(self.config.name)
        trials = study.get_trials(deepcopy=False)
        points = [_point(row, trials[row.trial], experiment_id) for row in pareto.pareto_rows(study, every_trial=True)]
        front = [point for point in points if point["pareto"]]
        title = f"{self.config.name}: val AUC vs GFLOPs ({len(points)} trained)"
        self.tracker.log_files(
            self.parent_run_id,
            {
                "pareto.json": json.dumps(front, indent=2),
                "trials.json": json.dumps(points, indent=2),
                "pareto.png": pareto_png(points, front, title),
                "pareto.html": pareto_html(points, front, title),
            },
        )
        self.tracker.describe_experiment(self.config.name, pareto_markdown(front, title, run_link(experiment_id, self.parent_run_id)))
        states = [t.state for t in trials]
        self.tracker.log_metrics(
            self.parent_run_id,
            {
                "trials_complete": states.count(TrialState.COMPLETE),
                "trials_pruned": states.count(TrialState.PRUNED),
                "trials_failed": states.count(TrialState.FAIL),
                "infeasible_draws": infeasible_draws(study),
                "pareto_size": len(front),
            },
            step=len(states),
        )

    def optimize(self, callbacks: list = ()) -> None:
        """Runs trials until the study holds its number of judged candidates and no retry waits."""
        waiting = len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        remaining = max(self.config.n_trials - counted(self.study), waiting)
        if remaining <= 0 or out_of_draws(self.study, self.config.n_trials):
            return
        budget = TrialBudget(self.config.n_trials, remaining)
        self.study.optimize(self.run_trial, catch=(Exception,), callbacks=[budget, self.refresh, *callbacks])


@dataclass
class TrialBudget:
    """Stops a study once this process has run `remaining` trials (failed ones too, so that a
    failing study ends) or the study holds its `n_trials`. Infeasible draws cost nothing and do
    not count, until there are `INFEASIBLE_DRAWS_PER_TRIAL` times `n_trials` of them."""

    n_trials: int
    remaining: int

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.remaining -= not infeasible_draw(trial)
        if self.remaining <= 0 or counted(study) >= self.n_trials or out_of_draws(study, self.n_trials):
            study.stop()


def out_of_draws(study: optuna.Study, n_trials: int) -> bool:
    """Whether the space gave so many infeasible draws that the study stopped short: it is too wide."""
    return infeasible_draws(study) >= INFEASIBLE_DRAWS_PER_TRIAL * n_trials


def _point(row: pareto.TrialRow, trial: FrozenTrial, experiment_id: str) -> dict:
    """A trial as the Pareto views show it: its row, what hovering tells, and its run's link."""
    record = TrialRecord.of(trial)
    return row.as_dict() | {
        "label": record.label or row.method,  # trials recorded before labels were kept: their method
        "val_auc_std": record.val_auc_std,
        "test_auc_std": record.test_auc_std,
        "latency_ms": record.latency_ms,
        "run_link": run_link(experiment_id, row.mlflow_run_id),
    }


def _trained_or_stopped(trial: FrozenTrial) -> bool:
    record = TrialRecord.of(trial)
    return (trial.state == TrialState.COMPLETE and record.trained) or record.stopped_at_rung is not None
