"""Bad input, as a new user gives it: every command and every kind of option, each case ending
with a non-zero exit, one line that names the problem and its fix, no traceback, and nothing
created or changed on disk (the case runs in a folder of its own, which is compared before and
after; the MLflow store, studies/ and runs/ default to it)."""

import fcntl
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli
from PIL import Image


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]  # "{t}": the case's folder; "{patches}": a valid patch folder
    expect: str  # a regular expression the error line matches
    setup: Callable[[Path, Path], None] | None = None  # (the case's folder, the patch folder)


def _file(name: str, text: str = "not what it should be\n") -> Callable[[Path, Path], None]:
    return lambda t, patches: (t / name).write_text(text)


def _folder(name: str, *files: str) -> Callable[[Path, Path], None]:
    def make(t: Path, patches: Path) -> None:
        (t / name).mkdir(parents=True)
        for file in files:
            (t / name / file).write_text("kept\n")

    return make


def _one_class(t: Path, patches: Path) -> None:
    folder = t / "one-class" / "til-positive"
    folder.mkdir(parents=True)
    for i in range(8):
        Image.fromarray(np.full((32, 32, 3), 100 + i, np.uint8)).save(folder / f"slide-{i}_{i}.png")


def _study(file: str = "study.yaml", **overrides: object) -> Callable[[Path, Path], None]:
    def write(t: Path, patches: Path) -> None:
        config = {
            "name": "s",
            "model": "resnet18",
            "input_size": 48,
            "data": {"source": str(patches)},
            "training": {"epochs": 1, "batch_size": 16, "accelerator": "cpu"},
            "search": {"phi": [0, 1]},
            "sampler": "grid",
            "n_trials": 2,
        }
        for dotted, value in overrides.items():
            *parents, leaf = dotted.split("__")
            node = config
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        (t / file).write_text(yaml.safe_dump(config))

    return write


def _both(*setups: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    return lambda t, patches: [setup(t, patches) for setup in setups] and None


# Locks that another command holds, as the setup of a case that runs while it does.
HELD: list[int] = []


def _held(name: str, folder: bool = True) -> Callable[[Path, Path], None]:
    """`name` (made if need be: a folder, or an empty file), held as a running command holds it."""

    def hold(t: Path, patches: Path) -> None:
        path = t / name
        if folder:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        HELD.append(os.open(path, os.O_RDONLY))
        fcntl.flock(HELD[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)

    return hold


DATA = ("--data", "{patches}")
TRAIN = ("train", *DATA, "--model", "resnet18", "--input-size", "32", "--epochs", "1")
USAGE = r"see `nar [a-z -]+--help`"
NO_STUDY = r"no study.*ghost.*run it first"

CASES: dict[str, Case] = {
    # the command line itself
    "unknown command": Case(("bogus",), "No such command 'bogus'"),
    "unknown sub-command": Case(("study", "bogus"), "No such command 'bogus'"),
    "unknown option": Case(("reduce", "--bogus"), f"No such option: --bogus.*{USAGE}"),
    # nar reduce
    "reduce: unknown model": Case(("reduce", "--model", "nosuchnet"), "nosuchnet"),
    "reduce: ϕ not a number": Case(("reduce", "--phi", "abc"), "ϕ"),
    "reduce: negative ϕ": Case(("reduce", "--phi", "-1"), "ϕ"),
    "reduce: reversed ϕ range": Case(("reduce", "--phi", "5:1"), "ϕ"),
    "reduce: tiny input": Case(("reduce", "--input-size", "4"), "input"),
    "reduce: unknown method": Case(("reduce", "--method", "nas"), "unknown method 'nas'"),
    "reduce: unknown rounding": Case(("reduce", "--rounding", "odd"), "--rounding"),
    "reduce: ϕ too large": Case(("reduce", "--model", "resnet18", "--input-size", "32", "--phi", "30"), "ϕ|input"),
    "reduce: α not a number": Case(("reduce", "--alpha", "x"), "--alpha"),
    "reduce: α·β²·γ² far from 2": Case(("reduce", "--alpha", "3", "--beta", "3", "--gamma", "3"), "α·β²·γ²|alpha"),
    "reduce: method without a ϕ": Case(("reduce", "--method", "resrep"), "resrep"),
    # nar train: data
    "train: no data option": Case(("train",), f"Missing option '--data'.*{USAGE}"),
    "train: data not found": Case(("train", "--data", "{t}/nowhere"), "nowhere"),
    "train: empty data folder": Case(("train", "--data", "{t}/empty"), "empty|no patch|class", _folder("empty")),
    "train: one-class data": Case(("train", "--data", "{t}/one-class"), "class", _one_class),
    "train: data a text file": Case(("train", "--data", "{t}/notes.txt"), "notes.txt", _file("notes.txt")),
    "train: positive class of a manifest": Case((*TRAIN, "--positive", "NOPE"), "class folders"),
    "train: bad slide pattern": Case((*TRAIN, "--slide-pattern", "("), "slide.pattern|regular expression"),
    "train: negative mpp": Case((*TRAIN, "--mpp", "-1"), "mpp|µm"),
    "train: val fraction over 1": Case((*TRAIN, "--val-fraction", "1.5"), "--val-fraction"),
    "train: test fraction 0": Case((*TRAIN, "--test-fraction", "0"), "--test-fraction"),
    # nar train: training
    "train: zero epochs": Case((*TRAIN, "--epochs", "0"), f"--epochs.*{USAGE}"),
    "train: zero seeds": Case((*TRAIN, "--seeds", "0"), "--seeds"),
    "train: zero batch": Case((*TRAIN, "--batch-size", "0"), "--batch-size"),
    "train: negative learning rate": Case((*TRAIN, "--lr", "-1"), "lr|learning rate"),
    "train: unknown scheduler": Case((*TRAIN, "--scheduler", "bogus"), "--scheduler"),
    "train: negative patience": Case((*TRAIN, "--patience", "-1"), "patience"),
    "train: unknown precision": Case((*TRAIN, "--precision", "bogus"), "precision"),
    "train: unknown accelerator": Case((*TRAIN, "--accelerator", "tpu9"), "accelerator"),
    "train: unknown model": Case(("train", *DATA, "--model", "nosuchnet"), "nosuchnet"),
    "train: tiny input": Case(("train", *DATA, "--model", "resnet18", "--input-size", "4"), "input"),
    "train: unknown method": Case((*TRAIN, "--method", "nas"), "unknown method 'nas'"),
    "train: ϕ not a number": Case((*TRAIN, "--phi", "x"), "ϕ"),
    "train: FLOPs target over 1": Case((*TRAIN, "--method", "resrep", "--flops-target", "2"), "flops.target|FLOPs"),
    "train: unknown init": Case((*TRAIN, "--init", "bogus"), "bogus"),
    "train: distill weight over 1": Case((*TRAIN, "--distill-weight", "2"), "--distill-weight"),
    "train: base not found": Case((*TRAIN, "--base", "{t}/nowhere"), "nowhere"),
    "train: base not a network": Case((*TRAIN, "--base", "{t}/folder"), "folder", _folder("folder", "notes.txt")),
    "train: run dir a file": Case((*TRAIN, "--run-dir", "{t}/notes.txt"), "notes.txt", _file("notes.txt")),
    "train: tracking store under a file": Case(
        (*TRAIN, "--tracking-uri", "sqlite:///{t}/notes.txt/mlflow.db"), "tracking|notes.txt", _file("notes.txt")
    ),
    "train: unknown tracking scheme": Case((*TRAIN, "--tracking-uri", "bogus://x"), "tracking|bogus"),
    "train: tracking server not there": Case((*TRAIN, "--tracking-uri", "http://127.0.0.1:9"), "cannot reach the MLflow tracking server"),
    # nar export
    "export: no source": Case(("export", "--out", "{t}/x"), "source|--run-id|--study|--selection"),
    "export: no out": Case(("export", "--run-id", "abc"), f"Missing option '--out'.*{USAGE}"),
    "export: selection not found": Case(("export", "--out", "{t}/x", "--selection", "{t}/nowhere.json"), "nowhere.json"),
    "export: selection not JSON": Case(("export", "--out", "{t}/x", "--selection", "{t}/notes.txt"), "notes.txt|JSON", _file("notes.txt")),
    "export: selection a list": Case(
        ("export", "--out", "{t}/x", "--selection", "{t}/list.json"), "list.json|selection", _file("list.json", "[]")
    ),
    "export: unknown study": Case(("export", "--out", "{t}/x", "--study", "ghost", "--trial", "1"), NO_STUDY),
    "export: study without trial": Case(("export", "--out", "{t}/x", "--study", "ghost"), "--trial"),
    "export: trial without study": Case(("export", "--out", "{t}/x", "--trial", "1"), "--study"),
    "export: two sources": Case(("export", "--out", "{t}/x", "--run-id", "a", "--study", "ghost", "--trial", "1"), "one model source"),
    "export: alias without register": Case(("export", "--out", "{t}/x", "--run-id", "a", "--alias", "champion"), "--register"),
    "export: out a file": Case(("export", "--out", "{t}/notes.txt", "--run-id", "a"), "notes.txt", _file("notes.txt")),
    # nar predict
    "predict: slide not found": Case(("predict", "{t}/nowhere.svs", "--model", "{t}/m", "--out", "{t}/o"), "nowhere|--model|m"),
    "predict: model not an export": Case(
        ("predict", "{t}/slides", "--model", "{t}/folder", "--out", "{t}/o"), "folder|export", _folder("folder", "notes.txt")
    ),
    "predict: zero batch": Case(("predict", "{t}/s.svs", "--model", "{t}/m", "--out", "{t}/o", "--batch-size", "0"), "--batch-size"),
    "predict: unknown device": Case(("predict", "{t}/s.svs", "--model", "{t}/m", "--out", "{t}/o", "--device", "tpu"), "device|m"),
    "predict: unknown engine": Case(("predict", "{t}/s.svs", "--model", "{t}/m", "--out", "{t}/o", "--engine", "bogus"), "engine|m"),
    "predict: shard past the count": Case(("predict", "{t}/s.svs", "--model", "{t}/m", "--out", "{t}/o", "--shard", "3/2"), "shard|m"),
    "predict: shard not K/N": Case(("predict", "{t}/s.svs", "--model", "{t}/m", "--out", "{t}/o", "--shard", "x"), "shard|m"),
    "predict: zero mpp": Case(("predict", "{t}/s.svs", "--model", "{t}/m", "--out", "{t}/o", "--mpp", "0"), "mpp|µm|m"),
    "predict: out a file": Case(("predict", "{t}/s.svs", "--model", "{t}/m", "--out", "{t}/notes.txt"), "notes.txt|m", _file("notes.txt")),
    "predict: no out": Case(("predict", "{t}/s.svs", "--model", "{t}/m"), f"Missing option '--out'.*{USAGE}"),
    # nar study run: the study file
    "study: file not found": Case(("study", "run", "{t}/nowhere.yaml"), "nowhere.yaml not found"),
    "study: not YAML": Case(("study", "run", "{t}/bad.yaml"), "not valid YAML", _file("bad.yaml", "a: [b\n")),
    "study: a list": Case(("study", "run", "{t}/list.yaml"), "mapping", _file("list.yaml", "- a\n- b\n")),
    "study: unknown key": Case(("study", "run", "{t}/study.yaml"), "phi_valus|Extra", _study(search__phi_valus=[1])),
    "study: negative trials": Case(("study", "run", "{t}/study.yaml"), "n_trials", _study(n_trials=-1)),
    "study: unknown sampler": Case(("study", "run", "{t}/study.yaml"), "sampler", _study(sampler="bogus")),
    "study: bad name": Case(("study", "run", "{t}/study.yaml"), "name", _study(name="a b")),
    "study: unknown model": Case(("study", "run", "{t}/study.yaml"), "nosuchnet", _study(model="nosuchnet")),
    "study: tiny input": Case(("study", "run", "{t}/study.yaml"), "input_size", _study(input_size=4)),
    "study: ϕ negative": Case(("study", "run", "{t}/study.yaml"), "ϕ", _study(search__phi=[0, -1])),
    "study: ϕ too large": Case(("study", "run", "{t}/study.yaml"), "ϕ|too large", _study(search__phi=[0, 40])),
    "study: unknown method": Case(("study", "run", "{t}/study.yaml"), "unknown method 'nas'", _study(search__methods={"nas": {}})),
    "study: budget without budget": Case(("study", "run", "{t}/study.yaml"), "gflops_budget", _study(objective="budget")),
    "study: halving on a budget": Case(
        ("study", "run", "{t}/study.yaml"), "halving", _study(objective="budget", gflops_budget=1.0, pruner="halving")
    ),
    "study: halving with one epoch": Case(("study", "run", "{t}/study.yaml"), "rungs|epochs", _study(pruner="halving")),
    "study: grid over a range": Case(("study", "run", "{t}/study.yaml"), "grid", _study(search__phi={"low": 0, "high": 2})),
    "study: zero confirmation seeds": Case(("study", "run", "{t}/study.yaml"), "confirm", _study(confirm={"seeds": 0})),
    "study: data not found": Case(("study", "run", "{t}/study.yaml"), "not found", _study(data={"source": "nowhere"})),
    "study: empty data": Case(
        ("study", "run", "{t}/study.yaml"), "empty|no patch|class", _both(_folder("empty"), _study(data={"source": "empty"}))
    ),
    "study: one-class data": Case(("study", "run", "{t}/study.yaml"), "class", _both(_one_class, _study(data={"source": "one-class"}))),
    "study: base not found": Case(("study", "run", "{t}/study.yaml"), "nowhere", _study(base="nowhere")),
    "study: unknown storage scheme": Case(("study", "run", "{t}/study.yaml"), "storage|bogus", _study(storage="bogus://x")),
    "study: journal under a file": Case(
        ("study", "run", "{t}/study.yaml"), "notes.txt|storage", _both(_file("notes.txt"), _study(storage="journal:notes.txt/s.journal"))
    ),
    "study: PostgreSQL not there": Case(
        ("study", "run", "{t}/study.yaml"), "cannot open study storage", _study(storage="postgresql://nar@127.0.0.1:9/nowhere")
    ),
    "study: workers on SQLite": Case(("study", "run", "{t}/study.yaml"), "SQLite|journal|PostgreSQL", _study(workers=2)),
    "study: tracking store under a file": Case(
        ("study", "run", "{t}/study.yaml"), "tracking|notes.txt", _both(_file("notes.txt"), _study(tracking_uri="sqlite:///notes.txt/m.db"))
    ),
    "study: tracking server not there": Case(
        ("study", "run", "{t}/study.yaml"),
        "cannot reach the MLflow tracking server at http://127.0.0.1:9",
        _study(tracking_uri="http://127.0.0.1:9"),
    ),
    "study: MLflow file store": Case(("study", "run", "{t}/study.yaml"), "file store is retired", _study(tracking_uri="file:./mlruns")),
    "train: MLflow file store": Case((*TRAIN, "--tracking-uri", "./mlruns"), "file store is retired"),
    "export: selection's store not here": Case(
        ("export", "--out", "{t}/x", "--selection", "{t}/chosen.json"),
        "no MLflow store at track/mlflow.db",
        _file("chosen.json", '{"mlflow_run_id": "abc", "tracking_uri": "sqlite:///track/mlflow.db"}'),
    ),
    "export: run in no store": Case(("export", "--out", "{t}/x", "--run-id", "abc"), "no MLflow store at .*mlflow.db"),
    "study: unknown methods flag": Case(("study", "run", "{t}/study.yaml", "--methods", "nar,nas"), "nas", _study()),
    "study: zero trials flag": Case(("study", "run", "{t}/study.yaml", "--trials", "0"), "n_trials", _study()),
    "study: trials flag not a number": Case(("study", "run", "--trials", "x"), f"--trials.*{USAGE}"),
    # read-only study commands on what is not there: nothing created
    "status: unknown study": Case(("study", "status", "--name", "ghost"), NO_STUDY),
    "pareto: unknown study": Case(("study", "pareto", "--name", "ghost"), NO_STUDY),
    "select: unknown study": Case(("study", "select", "--name", "ghost"), NO_STUDY),
    "status: nothing named": Case(("study", "status"), "name the study"),
    "select: negative drop": Case(("study", "select", "--name", "ghost", "--max-auc-drop", "-1"), "--max-auc-drop"),
    "status: unknown storage scheme": Case(("study", "status", "--name", "ghost", "--storage", "bogus://x"), "storage|bogus"),
    "pareto: journal not there": Case(("study", "pareto", "--name", "ghost", "--storage", "journal:{t}/nowhere.journal"), "ghost|nowhere"),
    "confirm: file not found": Case(("study", "confirm", "{t}/nowhere.yaml"), "nowhere.yaml not found"),
    "confirm: study not run": Case(("study", "confirm", "{t}/study.yaml"), r"no study.*\bs\b.*run it first", _study()),
    "confirm: zero seeds": Case(("study", "confirm", "{t}/study.yaml", "--seeds", "0"), "--seeds", _study()),
    "worker: file not found": Case(("study", "worker", "{t}/nowhere.yaml"), "nowhere.yaml not found"),
    # nar data
    "synth-patches: out a file": Case(("data", "synth-patches", "--out", "{t}/notes.txt", "--n", "4"), "is a file", _file("notes.txt")),
    "synth-patches: out not empty": Case(
        ("data", "synth-patches", "--out", "{t}/mine", "--n", "4"), "not empty", _folder("mine", "manifest.csv")
    ),
    "synth-patches: zero patches": Case(("data", "synth-patches", "--out", "{t}/x", "--n", "0"), "--n"),
    "synth-patches: unknown difficulty": Case(("data", "synth-patches", "--out", "{t}/x", "--difficulty", "bogus"), "--difficulty"),
    "synth-patches: label noise over 0.5": Case(("data", "synth-patches", "--out", "{t}/x", "--label-noise", "0.9"), "--label-noise"),
    "synth-slide: slide exists": Case(("data", "synth-slide", "--out", "{t}/s.tiff"), "already exists", _file("s.tiff")),
    "synth-slide: too narrow": Case(("data", "synth-slide", "--out", "{t}/s.tiff", "--width", "10"), "--width"),
    "synth-slide: odd tile": Case(("data", "synth-slide", "--out", "{t}/s.tiff", "--tile", "17"), "tile|16"),
    "inspect: not found": Case(("data", "inspect", "{t}/nowhere"), "nowhere"),
    "inspect: empty folder": Case(("data", "inspect", "{t}/empty"), "empty|no patch|class", _folder("empty")),
    "inspect: bad slide pattern": Case(("data", "inspect", "{patches}", "--slide-pattern", "("), "slide.pattern|regular expression"),
    # nar dashboard
    "dashboard: unknown study": Case(("dashboard", "--name", "ghost"), NO_STUDY),
    "dashboard: port 0": Case(("dashboard", "--name", "ghost", "--port", "0"), "--port"),
    "dashboard: no local store yet": Case(("dashboard", "--port", "5999"), "no MLflow store at .*mlflow/store/mlflow.db.*run a study"),
    "dashboard: study file not found": Case(("dashboard", "{t}/nowhere.yaml"), "nowhere.yaml not found"),
    "demo: unknown option": Case(("demo", "--bogus"), "No such option"),
    # concurrent runs into one folder: the second stops while the first runs
    "concurrent: two studies on one storage": Case(
        ("study", "run", "{t}/study.yaml"),
        "study storage .*s.db is in use.*nar study worker",
        _both(_study(), _held("studies/s.db", folder=False)),
    ),
    "concurrent: two trainings into one run folder": Case(
        (*TRAIN, "--run-dir", "{t}/run"), "run folder .*run is in use.*--run-dir", _held("run")
    ),
    "concurrent: two demos in one folder": Case(("demo",), "working folder .* is in use.*another folder", _held(".")),
}


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_a_non_zero_exit_and_nothing_on_disk(case: Case, tmp_path, patches, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "400")  # one line is one line, however long
    if case.setup is not None:
        case.setup(tmp_path, patches)
    before = _snapshot(tmp_path)
    try:
        code = run_cli(*(arg.format(t=tmp_path, patches=patches) for arg in case.args))
    finally:
        while HELD:
            os.close(HELD.pop())
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1, err
    assert re.search(case.expect, lines[0]), lines[0]
    assert _snapshot(tmp_path) == before


def test_the_table_is_long_enough():
    assert len(CASES) >= 100
