"""What a study achieves, against the paper's own method: a CPU-sized replication of the
protocol of Meirelles et al.'s Table 3 on synthetic TIL patches.

    .venv/bin/python bench/search_quality.py                  # the CPU profile (the reference)
    .venv/bin/python bench/search_quality.py --profile paper  # 240 px, 50 epochs: for a GPU
    .venv/bin/python bench/search_quality.py --profile smoke  # a few minutes: does it run?
    .venv/bin/python bench/search_quality.py --only fidelity  # the multi-fidelity part alone
    .venv/bin/python bench/search_quality.py --only rows      # the rows and the bayes study, no fidelity study
    .venv/bin/python bench/search_quality.py --data real      # the same on real H&E (Kather 2016)

Data (`--data synthetic`, the default): patches of the generator's `default` difficulty,
frozen (never tuned for this benchmark): training, validation and test patches come from
disjoint synthetic slides (seeds 0, 1, 2). `--data real` reads the Kather 2016 tiles in
../shared/data/kather2016 (`--data FOLDER`: any folder of class folders) as a user would:
immune cells (`--positive 04_LYMPHO`) against the other tissue, background left out, each
tile's source image from its name; whole source images go to train, val and test
(`split_patches`, seed 0, a quarter of them each to val and test), and the training and
validation splits are subsampled, stratified by class, to the profile's counts, so that
both benchmarks cost the same. Network: resnetv2_50 at the profile's base side. Rows, each over the
profile's seeds: the full network (trained from scratch); NAR with the paper's α, β, γ from
scratch (the paper's method); NAR inheriting from the full network and distilled from it;
input reduction (IR) from scratch; ResRep from the full network; and the front of a `bayes`
study over α, β, ϕ, its points trained again over the seeds. A row's seed k starts from the
full network's seed k, so that rows from the base are held to the same reference as the
others; the study, as a user's, searches from one base (the full network's best seed by val
AUC). Headline per method: the GFLOPs reduction at iso-AUC, the cheapest row whose
mean test AUC is at least the full network's mean minus 0.005 (and, second, minus one seed
std of the full network), and the training compute spent (epochs × training patches).

Multi-fidelity: the paper's ϕ grid trained at the full budget, against a TPE study over α,
β, ϕ whose candidates train in rungs (successive halving on the front), both from the full
network's seed 0 with inherit + distill: each front's hypervolume of (GFLOPs, AUC) up to
the full network's GFLOPs and AUC 0.5, and the training compute each spent.

Independent trainings run in parallel processes of one thread each (`--workers`), the study
through its own parallel workers; every finished training is kept under `--work`, so a run
that stops resumes where it was.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
MODEL = "resnetv2_50"
ISO_AUC_MARGIN = 0.005
BAYES_NAR = {"alpha": {"low": 1.0, "high": 1.6}, "beta": {"low": 1.0, "high": 1.3}}  # γ derived: α·β²·γ² = 2
BOOTSTRAP_RESAMPLES = 200


@dataclass(frozen=True)
class Profile:
    base_side: int
    patches: dict[str, int]  # per split
    full_epochs: int  # the full network and every from-scratch row: the paper gives all one budget
    tuned_epochs: int  # rows that start from the base (inherit + distill, ResRep) and the study's trials
    seeds: int
    phis: tuple[float, ...]
    resrep_targets: tuple[float, ...]
    resrep_schedule: dict[str, int]  # mask interval (steps), warm-up epochs, channels per update
    study_trials: int  # the baseline's evaluation included
    confirm: int  # front points of the study trained again over the seeds
    # Multi-fidelity against the full-budget grid, both from the full network's seed 0:
    fidelity_epochs: int  # every grid point's budget, and the last rung's
    grid_phis: tuple[float, ...]  # the paper's α, β, γ at these ϕ
    fidelity_trials: int  # the multi-fidelity study's, the baseline's evaluation included
    halving: dict[str, int]  # reduction factor and rungs
    confirm_seeds: int = 3  # the multi-fidelity study confirms its front over this many seeds
    confirm_within: float = 0.01  # ... of the points within this of the base's val AUC
    elastic_epochs: int | None = None  # the elastic network's training (default: tuned_epochs)
    batch_size: int = 32
    scheduler: str = "cosine"
    workers: int = 2
    accelerator: str = "cpu"


PROFILES = {
    # 48 px keeps ϕ = 1, 2, 3 above the 32 px minimum (48 / 1.15³ = 31.6 → 32); at 64 px the
    # generator's task depends little on resolution and every row lands within noise. The
    # paper's constant learning rate: a cosine schedule over 10 epochs left the full network at
    # a val AUC of 0.84, against 0.92 after 12 epochs at a constant rate.
    "cpu": Profile(
        base_side=48,
        patches={"train": 1500, "val": 600, "test": 3000},
        full_epochs=12,
        tuned_epochs=4,
        seeds=3,
        phis=(1, 2, 3),
        resrep_targets=(0.5,),
        resrep_schedule={"mask_interval": 2, "warmup_epochs": 1, "max_new": 64},
        study_trials=10,
        confirm=3,
        scheduler="none",
        fidelity_epochs=9,
        grid_phis=(0.5, 1, 1.5, 2, 2.5, 3),
        fidelity_trials=8,
        halving={"factor": 3, "rungs": 3},
    ),
    "paper": Profile(
        base_side=240,
        patches={"train": 4300, "val": 1000, "test": 15000},
        full_epochs=50,
        tuned_epochs=15,
        seeds=3,
        phis=(1, 2, 3, 4, 5),
        resrep_targets=(0.75, 0.5),
        resrep_schedule={"mask_interval": 20, "warmup_epochs": 3, "max_new": 16},
        study_trials=30,
        confirm=3,
        scheduler="none",
        workers=1,
        accelerator="gpu",
        fidelity_epochs=27,
        grid_phis=(0.5, 1, 1.5, 2, 2.5, 3, 4, 5),
        fidelity_trials=16,
        halving={"factor": 3, "rungs": 3},
    ),
    "smoke": Profile(
        base_side=40,
        patches={"train": 96, "val": 48, "test": 96},
        full_epochs=1,
        tuned_epochs=1,
        seeds=1,
        phis=(1,),
        resrep_targets=(0.5,),
        resrep_schedule={"mask_interval": 1, "warmup_epochs": 0, "max_new": 64},
        study_trials=3,
        confirm=1,
        fidelity_epochs=2,
        grid_phis=(1,),
        fidelity_trials=3,
        halving={"factor": 2, "rungs": 2},
        confirm_seeds=2,
        confirm_within=1.0,
    ),
}


@dataclass(frozen=True)
class Job:
    """One network trained with one seed: a row's share of work, done in a worker process."""

    row: str
    method: str
    options: dict[str, float]
    init: str
    distill: bool
    epochs: int
    seed: int

    @property
    def key(self) -> str:
        """The row and seed as a file name."""
        name = self.row.translate(str.maketrans({"α": "a", "β": "b", "γ": "g", "ϕ": "phi", "ε": "eps"}))
        slug = "".join(c if (c.isascii() and c.isalnum()) or c == "." else "-" for c in name)
        return f"{'-'.join(filter(None, slug.split('-')))}-seed{self.seed}"


@dataclass
class Row:
    name: str
    group: str
    jobs: list[dict] = field(default_factory=list)

    def mean_std(self, name: str) -> tuple[float, float]:
        values = [job[name] for job in self.jobs]
        return statistics.fmean(values), statistics.pstdev(values)

    @property
    def gflops(self) -> float:
        return statistics.fmean(job["gflops"] for job in self.jobs)

    @property
    def epochs(self) -> int:
        return sum(job["epochs"] for job in self.jobs)

    @property
    def seconds(self) -> float:
        return sum(job["seconds"] for job in self.jobs)


@dataclass(frozen=True)
class RealTissue:
    """A folder of class folders read as a binary task, split by source image (slide). The
    defaults read Kather 2016 as it comes; without a slide pattern a source is split per patch."""

    folder: Path
    positive: tuple[str, ...] = ("04_LYMPHO",)
    exclude: tuple[str, ...] = ("08_EMPTY",)
    slide_pattern: str | None = r"CRC-Prim-HE-\d+"
    val_fraction: float = 0.25
    test_fraction: float = 0.25
    split_seed: int = 0

    def settings(self) -> dict[str, object]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


KATHER = ROOT.parent / "shared" / "data" / "kather2016"


def write_real_data(folder: Path, real: RealTissue, patches: dict[str, int]) -> Path:
    """The real tiles split by source image, train and val subsampled (stratified by class)
    to `patches`, test whole, in one manifest with fixed splits (absolute paths)."""
    from sklearn.model_selection import train_test_split

    from nar_search.data.sources import SourceOptions, open_patch_source
    from nar_search.data.splits import split_patches

    manifest, made_of = folder / "manifest.csv", folder / "source.json"
    if manifest.exists():
        if made_of.exists() and json.loads(made_of.read_text()) != json.loads(json.dumps(real.settings())):
            sys.exit(f"{manifest} was made from other data ({made_of}); give another --work for {real.folder}")
        return manifest
    options = SourceOptions(positive=real.positive, exclude=real.exclude, slide_pattern=real.slide_pattern)
    dataset = open_patch_source(real.folder, options)
    splits = split_patches(dataset, real.val_fraction, real.test_fraction, real.split_seed)
    labels = np.array(dataset.labels)
    rows = []
    for split, indices in splits.items():
        if split != "test" and len(indices) > patches[split]:
            indices, _ = train_test_split(indices, train_size=patches[split], stratify=labels[indices], random_state=0)
        # Without slides each patch stands alone: the bootstrap then resamples patches.
        slides = dataset.slides or [f"patch-{i}" for i in range(len(dataset))]
        rows += [[str(dataset.paths[i].resolve()), dataset.labels[i], slides[i], split] for i in sorted(indices)]
    folder.mkdir(parents=True, exist_ok=True)
    staging = manifest.with_suffix(".partial")
    with staging.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "slide", "split"])
        writer.writerows(rows)
    staging.rename(manifest)
    made_of.write_text(json.dumps(real.settings(), indent=2))
    return manifest


def manifest_counts(manifest: Path) -> dict[str, dict[str, int]]:
    """Patches of each class and slides in each split of a manifest with fixed splits."""
    with manifest.open() as handle:
        entries = list(csv.DictReader(handle))
    return {
        split: {
            "patches": sum(e["split"] == split for e in entries),
            "positive": sum(e["split"] == split and e["label"] == "1" for e in entries),
            "slides": len({e["slide"] for e in entries if e["split"] == split}),
        }
        for split in ("train", "val", "test")
    }


def write_data(folder: Path, patches: dict[str, int]) -> Path:
    """Train, val and test patches from disjoint synthetic slides, in one manifest with fixed splits."""
    from nar_search.data.synth_patches import write_patches

    manifest = folder / "manifest.csv"
    if manifest.exists():
        return manifest
    rows = []
    for seed, (split, count) in enumerate(patches.items()):
        for entry in csv.DictReader(write_patches(folder / split, n=count, seed=seed).open()):
            rows.append([f"{split}/{entry['path']}", entry["label"], f"{split}-{entry['slide']}", split])
    staging = manifest.with_suffix(".partial")
    with staging.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "slide", "split"])
        writer.writerows(rows)
    staging.rename(manifest)
    return manifest


def run_job(job: Job, profile: Profile, manifest: Path, work: Path, base: str | None) -> dict:
    """Trains one seed of one row and returns its figures, test predictions included."""
    import torch

    from nar_search.lightning_modules.datamodule import PatchDataModule
    from nar_search.lightning_modules.distill_settings import DistillSettings
    from nar_search.lightning_modules.training import TrainingConfig, train_spec
    from nar_search.models.base_network import load_base
    from nar_search.models.cost import spec_cost
    from nar_search.models.registry import original_spec
    from nar_search.models.weights import save_network
    from nar_search.search.methods import get_method

    torch.set_num_threads(1 if profile.workers > 1 else torch.get_num_threads())
    method = get_method(job.method)
    given = load_base(base, MODEL, profile.base_side) if base else None
    settings = {key: value for key, value in job.options.items() if key != "phi"}
    candidate = method.candidate(original_spec(MODEL, profile.base_side), job.options.get("phi", 0.0), method.settings(settings))
    hooks = method.training(candidate)
    config = TrainingConfig(
        epochs=job.epochs,
        batch_size=profile.batch_size,
        scheduler=profile.scheduler,
        patience=None,
        seed=job.seed,
        accelerator=profile.accelerator,
        init=job.init,
        distill=DistillSettings() if job.distill else None,
    )
    datamodule = PatchDataModule(str(manifest), hooks.spec.input_size, profile.batch_size, seed=job.seed)
    run_dir = work / "runs" / job.key
    result = train_spec(hooks.spec, datamodule, config, run_dir, hooks.callbacks, given, False, hooks.finalize)
    run = result.runs[0]
    spec = run.classifier.spec
    save_network(run.classifier.model, spec, run_dir / "network")
    scores, labels = run.classifier.test_predictions()
    return {
        "row": job.row,
        "seed": job.seed,
        "gflops": spec_cost(spec).gflops,
        "input_size": spec.input_size,
        "val_auc": run.val_auc,
        "test_auc": run.test_auc,
        "epochs": run.epochs,
        "seconds": run.seconds,
        "network": str(run_dir / "network"),
        "scores": scores.tolist(),
        "labels": labels.tolist(),
    }


class Runner:
    """Runs jobs in worker processes, keeping each finished job's figures as a file."""

    def __init__(self, profile: Profile, manifest: Path, work: Path) -> None:
        self.profile, self.manifest, self.work = profile, manifest, work
        (work / "jobs").mkdir(parents=True, exist_ok=True)
        self.pool = ProcessPoolExecutor(max_workers=profile.workers, mp_context=get_context("spawn"))

    def submit(self, job: Job, base: str | None = None) -> Future:
        done = self.work / "jobs" / f"{job.key}.json"
        if done.exists():
            future: Future = Future()
            future.set_result(json.loads(done.read_text()))
            return future
        future = self.pool.submit(run_job, job, self.profile, self.manifest, self.work, base)
        future.add_done_callback(lambda f: self._keep(f, done))
        return future

    def close(self) -> None:
        """Ends the worker processes, also those still training (Lightning only notes a SIGTERM)."""
        for process in list(self.pool._processes.values()):
            process.kill()
        self.pool.shutdown(cancel_futures=True)

    def _keep(self, future: Future, path: Path) -> None:
        if future.exception() is None:
            staging = path.with_suffix(".partial")
            staging.write_text(json.dumps(future.result()))
            staging.rename(path)
            print(f"  {path.stem}: test AUC {future.result()['test_auc']:.4f} in {future.result()['seconds']:.0f} s", flush=True)


def rows_of(futures: dict[str, tuple[str, list[Future]]]) -> list[Row]:
    return [Row(name, group, [f.result() for f in jobs]) for name, (group, jobs) in futures.items()]


def run_study(profile: Profile, manifest: Path, work: Path, base: Path, name: str, epochs: int, **settings):
    """A study from the base (inherit + distill), through `nar study run` as a user runs it;
    `settings` are the study file's sampler, search, n_trials and so on."""
    import optuna

    from nar_search.search.study.storage import open_storage

    config = {
        "name": name,
        "model": MODEL,
        "input_size": profile.base_side,
        "base": str(base),
        "data": {"source": str(manifest)},
        "training": {
            "epochs": epochs,
            "batch_size": profile.batch_size,
            "patience": None,
            "scheduler": profile.scheduler,
            "accelerator": profile.accelerator,
            "init": "inherit",
            "distill": {"weight": 0.5, "temperature": 2.0},
        },
        "objective": "pareto",
        "storage": f"journal:{work / f'{name}.journal'}",
        "tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
        "workers": profile.workers,
        **settings,
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    threads = {"OMP_NUM_THREADS": "1"} if profile.workers > 1 else {}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "nar_search.search.cli", "study", "run", str(path)], cwd=work, check=True, env={**os.environ, **threads}
    )
    study = optuna.load_study(study_name=name, storage=open_storage(config["storage"]))
    if "wall_seconds" not in study.user_attrs:  # the run that did the work; a resumed bench finds it done
        study.set_user_attr("wall_seconds", time.perf_counter() - start)
    return study


def run_bayes_study(profile: Profile, manifest: Path, work: Path, base: Path) -> tuple[list[dict], int]:
    """A `bayes` study over α, β and ϕ from the base; returns the front's points (the base
    excluded) and the epochs its trials trained."""
    from nar_search.search.front import pareto
    from nar_search.search.study.compute import study_compute

    study = run_study(
        profile,
        manifest,
        work,
        base,
        "search-quality-bayes",
        profile.tuned_epochs,
        sampler="gp",
        n_trials=profile.study_trials,
        confirm={"seeds": 1},  # its points are trained again below, seed k from the full network's seed k
        search={"phi": {"low": 0.5, "high": max(profile.phis)}, "methods": {"nar": BAYES_NAR}},
    )
    # A trial that reused an earlier one's network (two workers asked for the same point) is no new point.
    front = [t for t in pareto.front(study) if not t.user_attrs.get("baseline") and "reused_from" not in t.user_attrs]
    front.sort(key=lambda t: t.user_attrs["gflops"])
    points = [{k: t.user_attrs[k] for k in ("alpha", "beta", "gamma", "phi", "gflops", "val_auc")} | {"trial": t.number} for t in front]
    return points, study_compute(study).epochs


def measure_fidelity(profile: Profile, runner: Runner, manifest: Path, work: Path) -> dict:
    """The paper's ϕ grid at the full budget against a multi-fidelity TPE study over α, β, ϕ
    (successive halving on the front, then its front confirmed over seeds), both from the full
    network's seed 0: each front's hypervolume, the best confirmed point, and the compute spent."""
    from nar_search.search.front import pareto
    from nar_search.search.study.compute import study_compute
    from nar_search.search.study.status import infeasible_draws

    full = runner.submit(Job("full (ϕ 0)", "nar", {"phi": 0}, "scratch", False, profile.full_epochs, 0)).result()
    base, train = Path(full["network"]), manifest_counts(manifest)["train"]["patches"]
    base_compute = full["epochs"] * full["gflops"] * train  # the base's own training, the same for both studies
    space = {"phi": {"low": min(profile.grid_phis), "high": max(profile.grid_phis)}, "methods": {"nar": BAYES_NAR}}
    studies = {
        "full-budget grid (paper α β γ)": run_study(
            profile,
            manifest,
            work,
            base,
            "fidelity-grid",
            profile.fidelity_epochs,
            sampler="grid",
            n_trials=len(profile.grid_phis) + 1,
            search={"phi": [0, *profile.grid_phis]},
            confirm={"seeds": 1},
        ),
        "multi-fidelity TPE (α β ϕ)": run_study(
            profile,
            manifest,
            work,
            base,
            "fidelity-tpe",
            profile.fidelity_epochs,
            sampler="tpe",
            n_trials=profile.fidelity_trials,
            search=space,
            pruner="halving",
            halving=profile.halving,
            confirm={"seeds": profile.confirm_seeds, "max_auc_drop": profile.confirm_within},
        ),
    }
    rows = {}
    for label, study in studies.items():
        front = pareto.front(study)
        reference = (pareto.baseline(study).user_attrs["gflops"], 0.5)
        states, compute = [t.state.name for t in study.trials], study_compute(study)
        every = pareto.pareto_rows(study, every_trial=True)
        confirmed = [r for r in every if r.confirmed_front]
        rows[label] = {
            "trials": len(study.trials),
            "full_budget": len(pareto.trained(study)),  # the baseline's evaluation of the base included
            "stopped": states.count("PRUNED"),
            "infeasible": infeasible_draws(study),
            "front": [
                {k: t.user_attrs.get(k) for k in ("alpha", "beta", "gamma", "phi", "gflops", "val_auc", "test_auc")} | {"trial": t.number}
                for t in front
            ],
            "hypervolume_val": pareto.hypervolume([(t.user_attrs["gflops"], t.user_attrs["val_auc"]) for t in front], reference),
            "hypervolume_test": pareto.hypervolume([(t.user_attrs["gflops"], t.user_attrs["test_auc"]) for t in front], reference),
            "confirmed_front": [r.as_dict() for r in confirmed],
            "confirmed_hypervolume_val": pareto.hypervolume([(r.gflops, r.mean_val_auc or r.val_auc) for r in confirmed], reference)
            if confirmed
            else None,
            "best_confirmed": best_confirmed(every, full["test_auc"], profile.confirm_seeds),
            "trainings": compute.trainings,
            "epochs": compute.epochs,
            "compute": compute.gflop_epochs * train,
            "training_seconds": compute.seconds,
            "wall_seconds": study.user_attrs.get("wall_seconds"),
        }
    grid = rows["full-budget grid (paper α β γ)"]
    for row in rows.values():
        row["hypervolume_ratio"] = row["hypervolume_val"] / grid["hypervolume_val"]
        row["compute_ratio"] = row["compute"] / grid["compute"]
        row["compute_ratio_with_base"] = (row["compute"] + base_compute) / (grid["compute"] + base_compute)
    return {
        "base": str(base),
        "base_val_auc": full["val_auc"],
        "base_test_auc": full["test_auc"],
        "base_compute": base_compute,
        "epochs": profile.fidelity_epochs,
        "halving": profile.halving,
        "confirm": {"seeds": profile.confirm_seeds, "within": profile.confirm_within},
        "studies": rows,
    }


# Ranking (issue 31): each ϕ of the grid at two corners of the feasible α, β (as fractions of
# their intervals): deep and narrow, shallow and wide.
RANKING_FRACTIONS = ((0.2, 0.8), (0.8, 0.2))
ELASTIC_POOL = 24  # the networks the sandwich draws from: random feasible draws, none of them a ranked point
CALIBRATION_PATCHES = 256


def ranking_points(profile: Profile) -> list[dict[str, float]]:
    from nar_search.models.registry import original_spec
    from nar_search.search.methods.feasible import FeasibleCoefficients
    from nar_search.search.methods.settings import Range

    original = original_spec(MODEL, profile.base_side)
    space = FeasibleCoefficients(Range(**BAYES_NAR["alpha"]), Range(**BAYES_NAR["beta"]), original.min_input_size / profile.base_side)
    points = []
    for phi in profile.grid_phis:
        for fractions in RANKING_FRACTIONS:
            alpha, beta, gamma = space.draw(phi, *fractions)
            points.append({"phi": phi, "alpha": alpha, "beta": beta, "gamma": gamma})
    return points


def elastic_job(profile: Profile, manifest: Path, work: Path, base: str, points: list[dict[str, float]]) -> dict:
    """The elastic network trained once from the base by the sandwich rule, every point's slice
    judged untrained (norms recalibrated, val AUC); and, as the control, the same slices of the
    base itself (inherited and recalibrated, no elastic training)."""
    import random

    import lightning.pytorch as pl
    import torch

    from nar_search.lightning_modules.datamodule import PatchDataModule
    from nar_search.lightning_modules.elastic import SandwichTraining, sliced_val_auc
    from nar_search.models.base_network import load_base
    from nar_search.models.cost import spec_cost
    from nar_search.models.elastic import ElasticNetwork
    from nar_search.models.registry import original_spec
    from nar_search.search.methods import get_method
    from nar_search.search.methods.feasible import FeasibleCoefficients
    from nar_search.search.methods.settings import Range

    torch.set_num_threads(1 if profile.workers > 1 else torch.get_num_threads())
    given = load_base(base, MODEL, profile.base_side)
    original, nar = original_spec(MODEL, profile.base_side), get_method("nar")

    def spec_of(point: dict[str, float]):
        settings = nar.settings({k: point[k] for k in ("alpha", "beta", "gamma")})
        return nar.candidate(original, point["phi"], settings).spec

    space = FeasibleCoefficients(Range(**BAYES_NAR["alpha"]), Range(**BAYES_NAR["beta"]), original.min_input_size / profile.base_side)
    rng = random.Random(1)
    pool = []
    for _ in range(ELASTIC_POOL):
        phi = rng.uniform(min(profile.grid_phis), max(profile.grid_phis))
        alpha, beta, gamma = space.draw(phi, rng.random(), rng.random())
        pool.append(spec_of({"phi": phi, "alpha": alpha, "beta": beta, "gamma": gamma}))
    specs = [spec_of(point) for point in points]
    phi = max(profile.grid_phis)  # the space's smallest network: the cheapest corner at the largest ϕ
    corners = [space.draw(phi, *fractions) for fractions in ((0, 0), (0, 1), (1, 0), (1, 1))]
    smallest = min((spec_of({"phi": phi, "alpha": a, "beta": b, "gamma": g}) for a, b, g in corners), key=lambda s: spec_cost(s).gflops)

    def judged(elastic: ElasticNetwork) -> list[float]:
        aucs = []
        for spec in specs:
            datamodule = PatchDataModule(str(manifest), spec.input_size, profile.batch_size, seed=0)
            datamodule.setup()
            aucs.append(sliced_val_auc(elastic, spec, datamodule, CALIBRATION_PATCHES))
        return aucs

    start = time.perf_counter()
    control = judged(ElasticNetwork(original, given.build()))
    control_seconds = time.perf_counter() - start
    elastic = ElasticNetwork(original, given.build())
    module = SandwichTraining(elastic, given.build(), smallest, lambda r: r.choice(pool), seed=0)
    trainer = pl.Trainer(
        max_epochs=profile.elastic_epochs or profile.tuned_epochs,
        accelerator=profile.accelerator,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=work / "runs" / "elastic",
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=PatchDataModule(str(manifest), profile.base_side, profile.batch_size, seed=0))
    training_seconds = time.perf_counter() - start
    start = time.perf_counter()
    sliced = judged(elastic)
    return {
        "epochs": profile.elastic_epochs or profile.tuned_epochs,
        "pool": len(pool),
        "training_seconds": training_seconds,
        "compute": module.compute,
        "evaluation_seconds": time.perf_counter() - start,
        "control_seconds": control_seconds,
        "val_auc_base_architecture": float(trainer.callback_metrics["val_auc"]),
        "sliced": sliced,
        "control": control,
        "gflops": [spec_cost(spec).gflops for spec in specs],
    }


def measure_ranking(profile: Profile, runner: Runner, manifest: Path, work: Path) -> dict:
    """Whether slices of a once-trained elastic network rank candidates as training them does:
    Kendall's τ between each point's sliced val AUC and its val AUC once trained (inherit +
    distill at the grid's budget, from the full network's seed 0), against the same τ for slices
    of the untrained base; and the compute of each way, against the grid's."""
    from scipy.stats import kendalltau

    from nar_search.models.cost import spec_cost
    from nar_search.models.reduce import nar_reduce
    from nar_search.models.registry import original_spec

    full = runner.submit(Job("full (ϕ 0)", "nar", {"phi": 0}, "scratch", False, profile.full_epochs, 0)).result()
    points = ranking_points(profile)
    trained = [
        runner.submit(
            Job(f"rank ϕ{p['phi']:g} α{p['alpha']:.3f} β{p['beta']:.3f}", "nar", p, "inherit", True, profile.fidelity_epochs, 0),
            full["network"],
        )
        for p in points
    ]
    done = work / "jobs" / f"elastic-{profile.elastic_epochs or profile.tuned_epochs}-epochs.json"
    if done.exists():
        elastic = json.loads(done.read_text())
    else:
        elastic = runner.pool.submit(elastic_job, profile, manifest, work, full["network"], points).result()
        done.with_suffix(".partial").write_text(json.dumps(elastic))
        done.with_suffix(".partial").rename(done)
    trained_val = [future.result()["val_auc"] for future in trained]
    train = manifest_counts(manifest)["train"]["patches"]
    original = original_spec(MODEL, profile.base_side)
    grid = sum(spec_cost(nar_reduce(original, phi)).gflops for phi in profile.grid_phis) * profile.fidelity_epochs * train
    return {
        "points": [
            p | {"gflops": g, "trained_val_auc": t, "sliced_val_auc": s, "base_slice_val_auc": c}
            for p, g, t, s, c in zip(points, elastic["gflops"], trained_val, elastic["sliced"], elastic["control"], strict=True)
        ],
        "tau_elastic": kendalltau(elastic["sliced"], trained_val).statistic,
        "tau_base_slices": kendalltau(elastic["control"], trained_val).statistic,
        # Within a ϕ (cost alone cannot rank there): does the slice pick the corner training picks?
        "same_pick_elastic": _same_picks(points, elastic["sliced"], trained_val),
        "same_pick_base_slices": _same_picks(points, elastic["control"], trained_val),
        "elastic": {k: v for k, v in elastic.items() if k not in ("sliced", "control", "gflops")},
        "trained_compute": sum(f.result()["epochs"] * f.result()["gflops"] for f in trained) * train,
        "trained_seconds": sum(f.result()["seconds"] for f in trained),
        "grid_compute": grid,
        "base_val_auc": full["val_auc"],
    }


def _same_picks(points: list[dict[str, float]], judged: list[float], trained: list[float]) -> int:
    """At how many ϕ the higher judged AUC of the ϕ's corners is also the higher trained one."""
    by_phi: dict[float, list[int]] = {}
    for index, point in enumerate(points):
        by_phi.setdefault(point["phi"], []).append(index)
    return sum(max(group, key=lambda i: judged[i]) == max(group, key=lambda i: trained[i]) for group in by_phi.values())


def ranking_report(ranking: dict) -> str:
    elastic = ranking["elastic"]
    lines = [
        "## Ranking: slices of one elastic network against trained candidates",
        "",
        f"{len(ranking['points'])} NAR points (each ϕ of the grid, deep-narrow and shallow-wide); trained: inherit + distill "
        f"from the base; sliced: norms recalibrated on {CALIBRATION_PATCHES} training patches, no training.",
        "",
        "| ϕ | α | β | γ | GFLOPs | trained val AUC | slice of the elastic network | slice of the base |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in ranking["points"]:
        lines.append(
            f"| {p['phi']:g} | {p['alpha']:.3f} | {p['beta']:.3f} | {p['gamma']:.3f} | {p['gflops']:.4f} | {p['trained_val_auc']:.4f} "
            f"| {p['sliced_val_auc']:.4f} | {p['base_slice_val_auc']:.4f} |"
        )
    lines += [
        "",
        f"- Kendall τ, sliced against trained val AUC: **{ranking['tau_elastic']:.3f}** for the elastic network's slices, "
        f"{ranking['tau_base_slices']:.3f} for the untrained base's (target ≥ 0.7). Within each ϕ, the corner the slices rank "
        f"higher is the one training ranks higher at {ranking['same_pick_elastic']} of {len(ranking['points']) // 2} ϕ "
        f"(the base's slices: {ranking['same_pick_base_slices']}).",
        f"- Elastic training: {elastic['epochs']} epochs over a pool of {elastic['pool']} networks, "
        f"{elastic['training_seconds'] / 60:.1f} min, "
        f"compute {elastic['compute']:,.0f} GFLOP·patches (the teacher's passes at a third) = "
        f"**{elastic['compute'] / ranking['grid_compute']:.2f}** of the grid's "
        f"({ranking['grid_compute']:,.0f}); judging all {len(ranking['points'])} slices took {elastic['evaluation_seconds']:.0f} s.",
        f"- Training the {len(ranking['points'])} points instead: "
        f"{ranking['trained_compute'] / ranking['grid_compute']:.2f} of the grid's compute, "
        f"{ranking['trained_seconds'] / 60:.1f} min of training.",
        f"- The base's val AUC {ranking['base_val_auc']:.4f}; the elastic network's base architecture after its training: "
        f"{elastic['val_auc_base_architecture']:.4f}.",
    ]
    return "\n".join(lines)


def best_confirmed(rows, base_test_auc: float, seeds: int) -> dict | None:
    """The cheapest point confirmed over `seeds` seeds whose mean test AUC is at least the
    base's minus the iso-AUC margin (the issue's target: at least 5× fewer GFLOPs)."""
    kept = [
        r
        for r in rows
        if r.confirmed
        and not r.baseline
        and r.seeds >= seeds
        and r.mean_test_auc is not None
        and r.mean_test_auc >= base_test_auc - ISO_AUC_MARGIN
    ]
    return min(kept, key=lambda r: r.gflops).as_dict() if kept else None


def fidelity_report(fidelity: dict) -> str:
    lines = [
        f"Multi-fidelity against the full-budget grid, from the full network's seed 0 (val AUC {fidelity['base_val_auc']:.4f}, "
        f"test {fidelity['base_test_auc']:.4f}); {fidelity['epochs']} epochs a full budget; halving {fidelity['halving']}; "
        f"the TPE study's front confirmed over {fidelity['confirm']['seeds']} seeds (points within "
        f"{fidelity['confirm']['within']} of the base's val AUC). Hypervolume of (GFLOPs, AUC) up to the full network's GFLOPs "
        "and AUC 0.5. Compute: Σ epochs × GFLOPs per patch × training patches, every training counted (rungs, "
        f"confirmation); the base's own training ({fidelity['base_compute']:,.0f}) is added in the last ratio.",
        "",
        "| study | trials | full budget | stopped at a rung | infeasible | front | hypervolume (val) | ÷ grid "
        "| hypervolume (test) | confirmed front (mean val) | trainings | epochs | compute (GFLOPs) | ÷ grid | ÷ grid, base included "
        "| training time | wall |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for label, row in fidelity["studies"].items():
        confirmed = f"{row['confirmed_hypervolume_val']:.4f}" if row["confirmed_hypervolume_val"] is not None else "–"
        wall = f"{row['wall_seconds'] / 60:.1f} min" if row["wall_seconds"] else "–"
        lines.append(
            f"| {label} | {row['trials']} | {row['full_budget']} | {row['stopped']} | {row['infeasible']} | {len(row['front'])} "
            f"| {row['hypervolume_val']:.4f} | {row['hypervolume_ratio']:.1%} | {row['hypervolume_test']:.4f} | {confirmed} "
            f"| {row['trainings']} | {row['epochs']} | {row['compute']:,.0f} | {row['compute_ratio']:.2f} "
            f"| {row['compute_ratio_with_base']:.2f} | {row['training_seconds'] / 60:.1f} min | {wall} |"
        )
    for label, row in fidelity["studies"].items():
        if not row["confirmed_front"]:
            continue
        lines += [
            "",
            f"{label}, confirmed front (mean ± sd over seeds):",
            "",
            "| trial | α | β | γ | ϕ | GFLOPs | cost ÷ | seeds | val AUC | test AUC |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|---|---|",
        ]
        for point in row["confirmed_front"]:
            val = (point["mean_val_auc"], point["val_auc_sd"]) if point["mean_val_auc"] is not None else (point["val_auc"], 0.0)
            test = (point["mean_test_auc"], point["test_auc_sd"]) if point["mean_test_auc"] is not None else (point["test_auc"], 0.0)
            lines.append(
                f"| {point['trial']}{'*' if point['baseline'] else ''} | {_fmt(point['alpha'])} | {_fmt(point['beta'])} "
                f"| {_fmt(point['gamma'])} | {_fmt(point['phi'])} | {point['gflops']:.3f} | {point['reduction']:.2f}× | {point['seeds']} "
                f"| {val[0]:.4f} ± {val[1]:.4f} | {test[0]:.4f} ± {test[1]:.4f} |"
            )
        best = row["best_confirmed"]
        lines += [
            "",
            f"Best confirmed point at the base's test AUC − {ISO_AUC_MARGIN}: "
            + (
                f"trial {best['trial']}, {best['reduction']:.2f}× fewer GFLOPs, "
                f"test {best['mean_test_auc']:.4f} ± {best['test_auc_sd']:.4f} over {best['seeds']} seeds (target ≥ 5×)."
                if best
                else "none."
            ),
        ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def measure_inheritance(profile: Profile, runner: Runner, manifest: Path) -> dict:
    """Which channels and blocks a reduced network keeps of the base: the first ones (`inherit`)
    or the weightiest (`inherit-magnitude`), NAR at the profile's ϕ with the paper's α, β, γ,
    inheriting from the full network's seed 0 and distilled from it, over the profile's seeds."""
    full = runner.submit(Job("full (ϕ 0)", "nar", {"phi": 0}, "scratch", False, profile.full_epochs, 0)).result()
    futures = {
        (mode, phi): [
            runner.submit(
                Job(f"NAR ϕ{phi:g} {mode}+distill from seed 0", "nar", {"phi": phi}, mode, True, profile.tuned_epochs, seed),
                full["network"],
            )
            for seed in range(profile.seeds)
        ]
        for phi in profile.phis
        for mode in ("inherit", "inherit-magnitude")
    }
    results = {}
    for (mode, phi), jobs in futures.items():
        done = [job.result() for job in jobs]
        results.setdefault(f"{phi:g}", {})[mode] = {
            "val_auc": [j["val_auc"] for j in done],
            "test_auc": [j["test_auc"] for j in done],
            "gflops": done[0]["gflops"],
            "seconds": sum(j["seconds"] for j in done),
        }
    return {"base_test_auc": full["test_auc"], "base_val_auc": full["val_auc"], "epochs": profile.tuned_epochs, "phis": results}


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4f} ± {statistics.pstdev(values):.4f}"


def inheritance_report(inheritance: dict) -> str:
    lines = [
        f"Inheritance from the full network's seed 0 (val {inheritance['base_val_auc']:.4f}, test {inheritance['base_test_auc']:.4f}), "
        f"distilled, {inheritance['epochs']} epochs, the paper's α β γ; mean ± sd over seeds.",
        "",
        "| ϕ | GFLOPs | first (inherit): val | test | weightiest (inherit-magnitude): val | test | test difference |",
        "|--:|--:|---|---|---|---|--:|",
    ]
    for phi, modes in inheritance["phis"].items():
        first, weightiest = modes["inherit"], modes["inherit-magnitude"]
        cells = [
            f"{statistics.fmean(m[k]):.4f} ± {statistics.pstdev(m[k]):.4f}" for m in (first, weightiest) for k in ("val_auc", "test_auc")
        ]
        difference = statistics.fmean(weightiest["test_auc"]) - statistics.fmean(first["test_auc"])
        lines.append(f"| {phi} | {first['gflops']:.3f} | {' | '.join(cells)} | {difference:+.4f} |")
    return "\n".join(lines)


def slide_resamples(slides: list[str], labels: list[int]) -> list[np.ndarray]:
    """Test patches resampled by slide (patches of one slide are not independent), the same
    resamples for every row, so that rows' intervals compare."""
    rng = np.random.default_rng(0)
    slides_, labels_ = np.array(slides), np.array(labels)
    by_slide = [np.flatnonzero(slides_ == s) for s in np.unique(slides_)]
    resamples = []
    while len(resamples) < BOOTSTRAP_RESAMPLES:
        index = np.concatenate([by_slide[i] for i in rng.integers(0, len(by_slide), len(by_slide))])
        if labels_[index].min() != labels_[index].max():
            resamples.append(index)
    return resamples


def bootstrap_interval(row: Row, resamples: list[np.ndarray]) -> tuple[float, float]:
    """95% interval of the row's mean test AUC over the slide resamples."""
    from sklearn.metrics import roc_auc_score

    labels = np.array(row.jobs[0]["labels"])
    scores = [np.array(job["scores"]) for job in row.jobs]
    means = [statistics.fmean(roc_auc_score(labels[index], s[index]) for s in scores) for index in resamples]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def iso_auc(rows: list[Row], threshold: float) -> Row | None:
    """The cheapest row that keeps the full network's AUC to `threshold`."""
    kept = [row for row in rows if row.mean_std("test_auc")[0] >= threshold]
    return min(kept, key=lambda row: row.gflops, default=None)


def report(rows: list[Row], profile: Profile, study: dict, wall: float, manifest: Path) -> tuple[str, dict]:
    full = next(row for row in rows if row.group == "full")
    full_auc, full_std = full.mean_std("test_auc")
    train = manifest_counts(manifest)["train"]["patches"]
    resamples = slide_resamples(full.jobs[0]["slides"], full.jobs[0]["labels"])
    lines = [
        "| row | input | GFLOPs | cost ÷ | val AUC | test AUC | test 95% CI (slides) | epochs | compute (epochs × patches) | wall |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    table = []
    for row in rows:
        (val, val_std), (test, test_std) = row.mean_std("val_auc"), row.mean_std("test_auc")
        low, high = bootstrap_interval(row, resamples)
        entry = {
            "row": row.name,
            "group": row.group,
            "input_size": row.jobs[0]["input_size"],
            "gflops": row.gflops,
            "reduction": full.gflops / row.gflops,
            "val_auc": val,
            "val_auc_std": val_std,
            "test_auc": test,
            "test_auc_std": test_std,
            "test_auc_ci95": [low, high],
            "epochs": row.epochs,
            "compute": row.epochs * train,
            "seconds": row.seconds,
            "seeds": [{k: j[k] for k in ("seed", "val_auc", "test_auc", "epochs")} for j in row.jobs],
        }
        table.append(entry)
        lines.append(
            f"| {row.name} | {entry['input_size']} | {row.gflops:.3f} | {entry['reduction']:.2f}× | {val:.4f} ± {val_std:.4f} "
            f"| {test:.4f} ± {test_std:.4f} | {low:.3f}–{high:.3f} | {row.epochs} | {entry['compute']:,} | {row.seconds:.0f} s |"
        )
    groups = {}
    for group in dict.fromkeys(row.group for row in rows if row.group != "full"):
        members = [row for row in rows if row.group == group]
        compute = sum(row.epochs for row in members) * train + (study["epochs"] * train if group == "bayes study" else 0)
        strict = iso_auc([full, *members], full_auc - ISO_AUC_MARGIN)
        loose = iso_auc([full, *members], full_auc - full_std)
        groups[group] = {
            "iso_auc_row": strict.name if strict else None,
            "iso_auc_reduction": full.gflops / strict.gflops if strict else None,
            "within_one_std_row": loose.name if loose else None,
            "within_one_std_reduction": full.gflops / loose.gflops if loose else None,
            "compute": compute,
        }
    most_reduced = max((row for row in rows if row.group == "nar scratch"), key=lambda row: full.gflops / row.gflops)
    gap = full_auc - most_reduced.mean_std("test_auc")[0]
    overlap = min(j["test_auc"] for j in full.jobs) <= max(j["test_auc"] for j in most_reduced.jobs)
    lines += [
        "",
        f"Discriminative? full network {full_auc:.4f} ± {full_std:.4f} against {most_reduced.name} "
        f"{most_reduced.mean_std('test_auc')[0]:.4f}: a gap of {gap:.3f} AUC, seed ranges "
        f"{'overlap' if overlap else 'do not overlap'}.",
        "",
        f"| method | iso-AUC (full − {ISO_AUC_MARGIN}) | reduction | within one seed std (full − {full_std:.4f}) | reduction "
        "| compute (epochs × patches) |",
        "|---|---|--:|---|--:|--:|",
    ]
    for group, figures in groups.items():
        strict = f"{figures['iso_auc_reduction']:.2f}×" if figures["iso_auc_reduction"] else "–"
        loose = f"{figures['within_one_std_reduction']:.2f}×" if figures["within_one_std_reduction"] else "–"
        lines.append(
            f"| {group} | {figures['iso_auc_row'] or 'none'} | {strict} | {figures['within_one_std_row'] or 'none'} "
            f"| {loose} | {figures['compute']:,} |"
        )
    lines += ["", f"Wall time: {wall / 60:.1f} min. Bayes study: {study['trials']} trials, front {study['front']}."]
    results = {
        "profile": asdict(profile),
        "rows": table,
        "methods": groups,
        "discriminative": {"gap": gap, "seed_ranges_overlap": overlap, "most_reduced": most_reduced.name},
        "study": study,
        "wall_seconds": wall,
    }
    return "\n".join(lines), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--work", type=Path, default=None, help="where data, runs and results go (default: runs/search-quality-PROFILE)")
    parser.add_argument("--workers", type=int, default=None, help="parallel trainings (default: the profile's)")
    parser.add_argument("--elastic-epochs", type=int, default=None, help="ranking: the elastic network's epochs (default: the profile's)")
    parser.add_argument(
        "--only",
        choices=["rows", "fidelity", "inheritance", "ranking"],
        default=None,
        help="rows: the rows and the bayes study; fidelity: only the multi-fidelity study against the grid; "
        "inheritance: only the first against the weightiest channels; ranking: only elastic slices against trained candidates",
    )
    parser.add_argument(
        "--data",
        default="synthetic",
        help=f"synthetic (the generator's default difficulty), real ({KATHER}) or another folder of class folders",
    )
    parser.add_argument("--positive", nargs="+", default=list(RealTissue.positive), help="real data: the positive class folders")
    parser.add_argument("--exclude", nargs="*", default=list(RealTissue.exclude), help="real data: class folders left out")
    parser.add_argument(
        "--slide-pattern", default=RealTissue.slide_pattern, help="real data: the source image in a file name ('' when names hold none)"
    )
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    if args.workers:
        profile = replace(profile, workers=args.workers)
    if args.elastic_epochs:
        profile = replace(profile, elastic_epochs=args.elastic_epochs)
    real = None
    if args.data != "synthetic":
        folder = KATHER if args.data == "real" else Path(args.data).resolve()
        real = RealTissue(folder, tuple(args.positive), tuple(args.exclude), args.slide_pattern or None)
    suffix = "" if real is None else "-real" if real.folder == KATHER else f"-{real.folder.name}"
    work = (args.work or ROOT / "runs" / f"search-quality-{args.profile}{suffix}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"search-quality ({args.profile} profile, {args.data} data) in {work}", flush=True)
    manifest = write_data(work / "data", profile.patches) if real is None else write_real_data(work / "data", real, profile.patches)
    print(f"data: {manifest_counts(manifest)}", flush=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # so that `finally` ends the workers
    runner = Runner(profile, manifest, work)
    parts = ("rows", "fidelity", "inheritance", "ranking") if args.only is None else (args.only,)
    try:
        rows, study = measure(profile, runner, manifest, work) if "rows" in parts else (None, None)
        inheritance = measure_inheritance(profile, runner, manifest) if "inheritance" in parts else None
        fidelity = measure_fidelity(profile, runner, manifest, work) if "fidelity" in parts else None
        ranking = measure_ranking(profile, runner, manifest, work) if "ranking" in parts else None
    finally:
        runner.close()
    wall = time.perf_counter() - start
    texts, results = [], {}
    if rows is not None:
        text, results = report(rows, profile, study, wall, manifest)
        texts.append(text)
    if inheritance is not None:
        texts.append(inheritance_report(inheritance))
        results["inheritance"] = inheritance
    if fidelity is not None:
        texts.append(fidelity_report(fidelity))
        results["fidelity"] = fidelity
    if ranking is not None:
        texts.append(ranking_report(ranking))
        results["ranking"] = ranking
    text = "\n\n".join(texts) + ("" if rows is not None else f"\n\nWall time: {wall / 60:.1f} min.")
    results["wall_seconds"] = wall
    results |= {"data": args.data, "splits": manifest_counts(manifest)}
    if real is not None:
        results["real"] = real.settings()
    only = f"-{args.only}" if args.only else ""
    (work / f"results{only}.json").write_text(json.dumps(results, indent=2))
    (work / f"results{only}.md").write_text(text + "\n")
    print(text)


def measure(profile: Profile, runner: Runner, manifest: Path, work: Path) -> tuple[list[Row], dict]:
    """Every row's trainings and the study; finished trainings are kept, so this resumes."""
    seeds = range(profile.seeds)

    def row(
        name: str, group: str, method: str, options: dict, init: str, distill: bool, epochs: int, bases: list[str] | None = None
    ) -> tuple[str, tuple[str, list[Future]]]:
        """A row's jobs, one per seed; seed k starts from `bases[k]` when given."""
        jobs = [runner.submit(Job(name, method, options, init, distill, epochs, seed), bases[seed] if bases else None) for seed in seeds]
        return name, (group, jobs)

    full_epochs, tuned_epochs = profile.full_epochs, profile.tuned_epochs
    futures = dict([row("full (ϕ 0)", "full", "nar", {"phi": 0}, "scratch", False, full_epochs)])
    for phi in profile.phis:
        futures.update([row(f"NAR ϕ{phi:g} scratch", "nar scratch", "nar", {"phi": phi}, "scratch", False, full_epochs)])
    for phi in profile.phis:
        futures.update([row(f"IR ϕ{phi:g}", "ir", "ir", {"phi": phi}, "scratch", False, full_epochs)])
    full = rows_of({"full (ϕ 0)": futures["full (ϕ 0)"]})[0]
    bases = [job["network"] for job in full.jobs]  # seed k of a row from the base starts from full seed k
    for phi in profile.phis:
        futures.update(
            [row(f"NAR ϕ{phi:g} inherit+distill", "nar inherit+distill", "nar", {"phi": phi}, "inherit", True, tuned_epochs, bases)]
        )
    for target in profile.resrep_targets:
        futures.update(
            [
                row(
                    f"ResRep ε{target:g} from base",
                    "resrep",
                    "resrep",
                    {"flops_target": target, **profile.resrep_schedule},
                    "inherit",
                    False,
                    tuned_epochs,
                    bases,
                )
            ]
        )
    rows = rows_of(futures)  # waits: the study wants both cores
    base = Path(max(full.jobs, key=lambda job: job["val_auc"])["network"])
    print(f"study base: {base} (the full network's best seed by val AUC)", flush=True)
    points, study_epochs = run_bayes_study(profile, manifest, work, base)
    confirmed = {}
    for point in points[: profile.confirm]:
        options = {k: point[k] for k in ("alpha", "beta", "gamma", "phi")}
        name = f"bayes trial {point['trial']}: α{point['alpha']:.2f} β{point['beta']:.2f} γ{point['gamma']:.2f} ϕ{point['phi']:.2f}"
        confirmed.update([row(name, "bayes study", "nar", options, "inherit", True, tuned_epochs, bases)])
    rows += rows_of(confirmed)
    slides = _test_slides(manifest)
    for each in rows:
        for job in each.jobs:
            job["slides"] = slides
    return rows, {"trials": profile.study_trials, "epochs": study_epochs, "front": [p["trial"] for p in points]}


def _test_slides(manifest: Path) -> list[str]:
    """The test patches' slides, in the order the test loader gives them (the manifest's)."""
    with manifest.open() as handle:
        return [entry["slide"] for entry in csv.DictReader(handle) if entry["split"] == "test"]


if __name__ == "__main__":
    main()
