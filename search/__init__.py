"""NAR Search: Optuna studies over Network Auto-Reduction, tracked in MLflow, and the `nar` CLI."""
