"""The study engine: Optuna's ask/tell loop over small parts (the base, the trial executor,
architecture twins), the records a study keeps in Optuna, recovery, rungs and workers."""
