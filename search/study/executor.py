"""The trial executor: a `TrialRequest` in, its network trained (or, for the baseline, the base
evaluated or trained) in the trial's MLflow run, a `TrialResult` out."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

import optuna
from lightning.pytorch.callbacks import Callback

from nar_search.lightning_modules.rungs import Rungs
from nar_search.lightning_modules.settings import TrainingConfig
from nar_search.models.init_modes import get_init_mode
from nar_search.models.weights import SPEC_FILE, WEIGHTS_FILE
from nar_search.search.config import StudyConfig
from nar_search.search.study.bases import BaseProvider
from nar_search.search.study.halving import rungs_callback
from nar_search.search.study.record import TrialRecord
from nar_search.search.study.trial import TrialRequest, TrialResult
from nar_search.search.tracking import Tracker
from nar_search.search.training_run import CandidateOutcome, DataSettings, evaluate_in_run, train_in_run


class TrialExecutor:
    def __init__(self, config: StudyConfig, study: optuna.Study, tracker: Tracker, bases: BaseProvider) -> None:
        self.config, self.study, self.tracker, self.bases = config, study, tracker, bases
        self.data = DataSettings(**config.data.model_dump())
        self.training = config.training.to_training_config()

    def execute(self, request: TrialRequest, run_id: str) -> TrialResult:
        run_dir = Path("runs") / self.config.name / f"trial-{request.number}"
        if request.baseline:
            return TrialResult.trained(self._baseline(request, run_id, run_dir), stopped_at_rung=None)
        rungs = self._rungs(request)
        outcome = self._train(request, run_id, run_dir, self.training, [*self._pruning(request), *rungs])
        reached = TrialRecord.of(request.trial).rungs or []
        self.tracker.log_metric_series(run_id, [("rung_val_auc", rung["val_auc"], rung["epochs"]) for rung in reached])
        stopped = next((rung.stopped_at for rung in rungs if rung.stopped_at is not None), None)
        return TrialResult.trained(outcome, stopped_at_rung=stopped)

    def confirm(self, request: TrialRequest, run_id: str, seed: int) -> CandidateOutcome:
        """One more seed of a trained candidate, at the full budget: no rung, no pruner stops it."""
        run_dir = Path("runs") / self.config.name / f"trial-{request.number}-seed{seed}"
        data = replace(self.data, split_seed=self.training.seed)
        return self._train(request, run_id, run_dir, replace(self.training, seed=seed, seeds=1), [], data)

    def _release(self, run_dir: Path) -> None:
        """A candidate's local files, once its MLflow run holds its network (`keep_local` keeps
        them): the weights, spec and checkpoints its training wrote, and their folders if that
        leaves them empty. The baseline's folder, every later trial's base here, is kept."""
        if self.config.keep_local:
            return
        for path in [run_dir / WEIGHTS_FILE, run_dir / SPEC_FILE, *run_dir.glob("seed*/best*.ckpt")]:
            path.unlink(missing_ok=True)
        for folder in [*run_dir.glob("seed*"), run_dir]:
            with contextlib.suppress(OSError):  # not empty: a file this training did not write stays
                folder.rmdir()

    def _train(
        self,
        request: TrialRequest,
        run_id: str,
        run_dir: Path,
        config: TrainingConfig,
        callbacks: list[Callback],
        data: DataSettings | None = None,
    ) -> CandidateOutcome:
        """The request's candidate trained as its method says, from the base and learning from it
        as `config` says; its local files released once its MLflow run holds them."""
        training = request.method.training(request.candidate)
        mode = get_init_mode(config.init)
        outcome = train_in_run(
            self.tracker,
            run_id,
            training.spec,
            data or self.data,
            config,
            run_dir,
            callbacks=[*callbacks, *training.callbacks],
            finalize=training.finalize,
            base=self.bases.wait(request.number) if mode.needs_base or config.distill else None,
            teacher=self.bases.teacher(request.number) if config.distill else None,
            progress=False,
            params=request.params,
        )
        self._release(run_dir)
        return outcome

    def _baseline(self, request: TrialRequest, run_id: str, run_dir: Path) -> CandidateOutcome:
        """The given base evaluated as it is, or, without one, the original network trained from
        scratch and kept as the base of every later trial."""
        if self.bases.base is not None:  # given, or trained by an earlier try of this trial: never trained again
            base = self.bases.base
            return evaluate_in_run(self.tracker, run_id, base, self.data, self.training, run_dir, progress=False, params=request.params)
        scratch = replace(self.training, init="scratch", distill=None)
        spec = request.method.training(request.candidate).spec
        try:
            outcome = train_in_run(self.tracker, run_id, spec, self.data, scratch, run_dir, progress=False, params=request.params)
        except Exception:
            self.study.stop()  # every later trial starts from the base: none can run without it
            raise
        self.bases.keep(run_dir, run_id)
        return outcome

    def _rungs(self, request: TrialRequest) -> list[Rungs]:
        """Successive halving's rungs, for a Pareto study's candidate."""
        if self.config.pruner != "halving":
            return []
        halving = self.config.halving
        return [rungs_callback(self.study, request.trial, self.training.epochs, halving.factor, halving.rungs)]

    def _pruning(self, request: TrialRequest) -> list[Callback]:
        """Optuna's pruner, for a budget study."""
        if self.config.objective != "budget" or self.config.pruner == "none":
            return []
        from optuna_integration import PyTorchLightningPruningCallback

        return [PyTorchLightningPruningCallback(request.trial, monitor="val_auc")]
