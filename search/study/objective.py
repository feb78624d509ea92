"""A trial as Optuna's examples write one: ask for a candidate, build its request, train it
(or reuse its twin's result), return (val AUC, GFLOPs). The trial's record is written here, part
by part as the trial learns it, so that other workers read each part as it appears."""

from __future__ import annotations

import optuna

from nar_search.models.cost import spec_cost
from nar_search.search.config import StudyConfig
from nar_search.search.interrupts import Interrupted
from nar_search.search.methods import get_method
from nar_search.search.study import space
from nar_search.search.study.bases import BaseProvider
from nar_search.search.study.executor import TrialExecutor
from nar_search.search.study.halving import STOPPED_TAG
from nar_search.search.study.record import TrialRecord
from nar_search.search.study.recovery import this_worker
from nar_search.search.study.trial import TrialRequest
from nar_search.search.study.twins import reuse, trained_twin
from nar_search.search.tracking import Tracker

BUDGET_CONSTRAINT = "gflops_over_budget"


class Objective:
    def __init__(self, config: StudyConfig, study: optuna.Study, tracker: Tracker, parent_run_id: str, bases: BaseProvider) -> None:
        self.config, self.study, self.tracker, self.parent_run_id = config, study, tracker, parent_run_id
        self.original = bases.original
        self.executor = TrialExecutor(config, study, tracker, bases)
        # Every trial sets every constraint of the study: the GP sampler refuses trials whose names differ.
        self.constraints = {name for method in config.search.methods for name in get_method(method).constraints}
        if config.objective == "budget":
            self.constraints.add(BUDGET_CONSTRAINT)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        """The trial claims its worker first; a stop (Ctrl-C, SIGTERM) reaches Optuna as the
        KeyboardInterrupt it fails a trial on."""
        TrialRecord(worker=this_worker()).write(trial)
        try:
            values = self._run(trial)
        except Interrupted as stop:
            raise KeyboardInterrupt(str(stop)) from stop
        for name in self.constraints - set(trial.constraints):  # not reached (a γ < 1 draw has no input side): feasible
            trial.set_constraint(name, 0.0)
        return values

    def _run(self, trial: optuna.Trial) -> float | tuple[float, float]:
        method, candidate = space.suggest(trial, self.config.search, self.original)
        TrialRecord(method=method.name).write(trial)
        if candidate is None:  # infeasible: recorded by its constraint, nothing to train
            return self._values(0.0, spec_cost(self.original).gflops)
        request = TrialRequest(trial, method, candidate, baseline=bool(TrialRecord.of(trial).baseline))
        request.description().write(trial)
        over_budget = self._over_budget(request)
        twin = None if over_budget else trained_twin(self.study, request.architecture, trial.number)
        with self.tracker.run(self.config.name, request.run_name, self._tags(request), self.parent_run_id) as run_id:
            TrialRecord(mlflow_run_id=run_id).write(trial)
            if over_budget:
                raise optuna.TrialPruned(f"{request.expected_gflops:.3f} GFLOPs is over the budget of {self.config.gflops_budget}")
            result = reuse(self.tracker, run_id, twin, request) if twin is not None else self.executor.execute(request, run_id)
            result.record().write(trial)
            if result.stopped_at_rung is not None:
                self.tracker.set_tags(run_id, {STOPPED_TAG: str(result.stopped_at_rung)})
                raise optuna.TrialPruned(f"stopped at the {result.stopped_at_rung}-epoch rung: dominated by the candidates that reached it")
        return self._values(result.val_auc, result.gflops)

    def _over_budget(self, request: TrialRequest) -> bool:
        """Over-budget networks are infeasible; all but the baseline (the AUC reference) are
        pruned before they train, each with a FINISHED run that says so, as any early stop."""
        if self.config.objective != "budget":
            return False
        assert self.config.gflops_budget is not None  # the config refuses objective 'budget' without one
        over = request.expected_gflops - self.config.gflops_budget
        request.trial.set_constraint(BUDGET_CONSTRAINT, over)
        return over > 0 and not request.baseline

    def _values(self, auc: float, gflops: float) -> float | tuple[float, float]:
        return (auc, gflops) if self.config.objective == "pareto" else auc

    def _tags(self, request: TrialRequest) -> dict[str, str]:
        return {
            "optuna.study": self.config.name,
            "optuna.trial_number": str(request.number),
            "method": request.method.name,
            "pareto": "false",
            "nar.baseline": str(request.baseline).lower(),
        }
