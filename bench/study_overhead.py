"""Time a study spends outside training, per trial, over a study of cheap trials.

Training is replaced by a no-op that returns an untrained network with made-up scores, so
a trial's wall time is all overhead: suggesting, building and costing the network, the
MLflow child run (params, metrics, safetensors, ROC), latency, and the Pareto refresh
(tags, table, PNG and HTML). Target: under 2 s per trial, not growing with the count.

    .venv/bin/python bench/study_overhead.py --trials 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import torch
import yaml

import nar_search.search.training_run
from nar_search.data.synth_patches import write_patches
from nar_search.lightning_modules.classifier import PatchClassifier
from nar_search.lightning_modules.training import SeedRun, TrainingResult
from nar_search.search.config import load_study_config
from nar_search.search.study.opening import open_study
from nar_search.search.study.runner import StudyRunner
from nar_search.search.tracking import Tracker


def untrained(spec, datamodule, config, run_dir, *args, **kwargs) -> TrainingResult:
    classifier = PatchClassifier(spec.to_dict())
    classifier._test_outputs = [(torch.rand(32), torch.arange(32) % 2)]
    score = float(torch.rand(()))
    return TrainingResult(runs=[SeedRun(0, score, score, 0, 0.0, [], classifier)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--model", default="resnetv2_50")
    parser.add_argument("--input-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    nar_search.search.training_run.train_spec = untrained

    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        os.chdir(folder)  # the trials' run folders go here
        write_patches(folder / "patches", n=16, seed=0)
        config_file = folder / "bench.yaml"
        config_file.write_text(
            yaml.safe_dump(
                {
                    "name": "overhead",
                    "model": args.model,
                    "input_size": args.input_size,
                    "data": {"source": str(folder / "patches")},
                    "search": {
                        "phi": {"low": 0, "high": 2},
                        "methods": {"nar": {"alpha": {"low": 1.0, "high": 1.6}, "beta": {"low": 1.0, "high": 1.3}}},
                    },
                    "sampler": "random",
                    "n_trials": args.trials,
                    "storage": f"sqlite:///{folder / 'study.db'}",
                    "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
                }
            )
        )
        config = load_study_config(config_file, {})
        study = open_study(config)
        runner = StudyRunner(config, study, Tracker(config.tracking_uri))
        durations: list[float] = []
        started = [time.perf_counter()]

        def clock(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            now = time.perf_counter()
            durations.append(now - started[0])
            started[0] = now

        runner.optimize([clock])

    reused = sum("reused_from" in t.user_attrs for t in study.trials)
    tenth = max(1, len(durations) // 10)
    print(f"{len(durations)} trials of {args.model} at {args.input_size} px ({reused} reused an earlier architecture)")
    print(
        f"overhead per trial: median {statistics.median(durations):.3f} s, "
        f"mean {statistics.fmean(durations):.3f} s, max {max(durations):.3f} s"
    )
    print(
        f"first {tenth}: mean {statistics.fmean(durations[:tenth]):.3f} s · last {tenth}: mean {statistics.fmean(durations[-tenth:]):.3f} s"
    )


if __name__ == "__main__":
    main()
