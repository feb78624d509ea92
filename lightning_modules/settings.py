"""Training's settings and their defaults, apart from its Lightning code: the study file's
model, `nar train`'s options and the trainings all read their defaults here, and `--help`
shows them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nar_search.lightning_modules.distill_settings import DistillSettings
from nar_search.lightning_modules.errors import TrainingError

Scheduler = Literal["none", "step", "cosine"]

# ResRep's mask schedule: after its warm-up epochs, every interval of optimiser steps, at most
# `max_new` more channels masked. The reference's 4 suits ImageNet's ~10⁶ steps; a short run
# needs more to reach its target.
RESREP_MASK_INTERVAL = 200
RESREP_WARMUP_EPOCHS = 5
RESREP_MAX_NEW = 4


# What Lightning's Trainer takes (checked here, so that a typo fails before any run or folder
# exists, not inside the Trainer).
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine", "transformer-engine-float16")
PRECISION_SHORTHANDS = ("32", "16", "bf16", "64")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 50
    batch_size: int = 32
    lr: float = 5e-4  # Adam's, as the paper trains
    weight_decay: float = 5e-4
    scheduler: Scheduler = "none"
    patience: int | None = 10  # epochs without val AUC gain before stopping; None: never stop early
    seeds: int = 1
    seed: int = 0
    precision: str = "32-true"
    accelerator: str = "auto"
    num_workers: int = 0
    deterministic: bool = True
    init: str = "scratch"  # how weights start: a name of models.init_modes
    distill: DistillSettings | None = None  # learn from the base network as teacher too

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS + PRECISION_SHORTHANDS:
            raise TrainingError(f"precision {self.precision!r} is not one Lightning knows: use one of {', '.join(PRECISIONS)}")
        if self.accelerator.lower() not in ACCELERATORS:
            raise TrainingError(f"accelerator {self.accelerator!r} is not one Lightning knows: use one of {', '.join(ACCELERATORS)}")
        if not self.lr > 0:
            raise TrainingError(f"learning rate {self.lr:g} must be above 0, e.g. 5e-4")
        if self.weight_decay < 0:
            raise TrainingError(f"weight decay {self.weight_decay:g} must be 0 or more")
        if self.patience is not None and self.patience < 1:
            raise TrainingError(f"patience {self.patience} must be at least one epoch (or none, never to stop early)")
        if self.epochs < 0 or min(self.batch_size, self.seeds) < 1:  # 0 epochs: a given base, evaluated only
            raise TrainingError("epochs may not be negative, and batch size and seeds must be at least 1")
