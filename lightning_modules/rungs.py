"""Training in rungs: at each rung (a number of epochs), a judge sees the best val AUC so far
and says whether the network goes on training; if not, the fit stops there. A network that
goes on keeps its weights and optimiser state: it never restarts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

# (epochs trained, best val AUC so far) → whether training goes on to the next rung
Judge = Callable[[int, float], bool]


class Rungs(Callback):
    """Asks `judge` at every rung below the last (one fit: one seed)."""

    def __init__(self, epochs: Sequence[int], judge: Judge) -> None:
        self.epochs = sorted(set(epochs))[:-1]  # the last rung is the full budget: nothing to decide
        self.judge = judge
        self.best_auc = float("-inf")
        self.stopped_at: int | None = None  # epochs trained when the judge stopped the fit

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the epoch's metrics are gathered (as EarlyStopping reads them).
        if trainer.sanity_checking or "val_auc" not in trainer.callback_metrics:
            return
        self.best_auc = max(self.best_auc, float(trainer.callback_metrics["val_auc"]))
        trained = trainer.current_epoch + 1
        if trained in self.epochs and not self.judge(trained, self.best_auc):
            self.stopped_at = trained
            trainer.should_stop = True
