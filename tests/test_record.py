"""Issue 17, item 3: a trial's record, typed, to and from Optuna's user attributes under the keys
existing studies hold."""

import optuna
import pytest

from nar_search.search.study.record import SeedRecord, StudyRecord, TrialRecord

# What studies, dashboards and bench/ read: a renamed key would orphan every existing study's attributes.
TRIAL_KEYS = (
    {"baseline", "retry_of", "worker", "failure", "mlflow_run_id"}  # the trial in its study
    | {"method", "label", "input_size", "spec", "architecture", "expected_gflops", "training_gflops"}  # its candidate
    | {"rungs", "stopped_at_rung", "reused_from"}  # how it trained
    | {"gflops", "params", "val_auc", "val_auc_std", "test_auc", "test_auc_std", "latency_ms", "seconds", "epochs"}  # its result
)


def test_the_keys_are_the_stored_ones():
    every = TrialRecord(**{key: 1 for key in TRIAL_KEYS}, settings={"alpha": 1.2, "phi": 2.0})
    assert every.attrs().keys() == TRIAL_KEYS | {"alpha", "phi"}
    assert StudyRecord(config={}, mlflow_parent_run_id="r", pareto_trials=[], base_network="b").__dict__.keys() == {
        "config",
        "mlflow_parent_run_id",
        "pareto_trials",
        "base_network",
        "base_sha256",
        "base_run_id",
        "confirm_seeds",
        "runner",
        "creator",
    }


def test_a_confirmation_seed_is_one_study_attribute_written_twice():
    study = optuna.create_study()
    SeedRecord(4, 1, worker={"pid": 7}, mlflow_run_id="run").write(study)
    assert study.user_attrs == {"confirmation.4.1": {"trial": 4, "seed": 1, "worker": {"pid": 7}, "mlflow_run_id": "run"}}
    assert not SeedRecord.all_of(study)[0].done
    SeedRecord(4, 1, worker={"pid": 7}, mlflow_run_id="run", val_auc=0.9, test_auc=0.8, gflops=0.1, epochs=2, seconds=3.0).write(study)
    (seed,) = SeedRecord.all_of(study)
    assert seed.done and (seed.trial, seed.seed, seed.val_auc, seed.epochs) == (4, 1, 0.9, 2)


def test_a_record_written_in_parts_reads_back_whole():
    study = optuna.create_study()
    trial = study.ask()
    TrialRecord(method="nar", settings={"alpha": 1.2, "phi": 2.0}).write(trial)
    TrialRecord(mlflow_run_id="run", gflops=0.5, latency_ms=None).write(trial)  # None: not written, nothing erased
    study.tell(trial, 0.9)
    stored = study.trials[0]
    assert stored.user_attrs == {"method": "nar", "alpha": 1.2, "phi": 2.0, "mlflow_run_id": "run", "gflops": 0.5}
    record = TrialRecord.of(stored)
    assert (record.method, record.settings, record.mlflow_run_id, record.gflops) == ("nar", {"alpha": 1.2, "phi": 2.0}, "run", 0.5)
    assert record.trained and record.baseline is None and record.latency_ms is None

    StudyRecord(pareto_trials=["run"]).write(study)
    assert study.user_attrs == {"pareto_trials": ["run"]} and StudyRecord.of(study).pareto_trials == ["run"]


def test_a_setting_named_like_a_field_is_refused():
    with pytest.raises(ValueError, match="gflops"):
        TrialRecord(settings={"gflops": 1.0})
