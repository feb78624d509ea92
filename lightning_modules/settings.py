"""Training's settings and their defaults, apart from its Lightning code: the study file's
model, `nar train`'s options and the trainings all read their defaults here, and `--help`
shows them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nar_search.lightning_modules.distill_settings import DistillSettings

Scheduler = Literal["none", "step", "cosine"]

# ResRep's mask schedule: after its warm-up epochs, every interval of optimiser steps, at most
# `max_new` more channels masked. The reference's 4 suits ImageNet's ~10⁶ steps; a short run
# needs more to reach its target.
RESREP_MASK_INTERVAL = 200
RESREP_WARMUP_EPOCHS = 5
RESREP_MAX_NEW = 4


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
