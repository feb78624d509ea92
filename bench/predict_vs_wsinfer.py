"""Whole-slide prediction against WSInfer's: both tools as users run them, on the same slide
and the same exported model, timed as whole processes.

    .venv/bin/python bench/predict_vs_wsinfer.py                                    # 8192² slide, 3 rounds
    .venv/bin/python bench/predict_vs_wsinfer.py --width 40000 --height 40000 --rounds 3

WSInfer 0.6.1 runs from a virtual environment of its own (installed on the first run, with the
same torch release as ours, OpenSlide and `zarr<3`, which its tiffslide needs), offline: it
reads its model-zoo registry at start-up, so an empty one is put in a home folder of its own
and the Hugging Face hub is told to stay offline. The slide is rendered once, alone in its
folder (WSInfer takes every file there for a slide); the model is a randomly initialised
reduced network exported by `models.export` unless --model names an export folder.

Each round runs `nar predict` and `wsinfer run` once each, which first alternating, with the
same OpenMP threads, batch size and reading workers, on the CPU. It prints each tool's seconds
and patches per second for every round, the median ratio, and how far the two TIL maps of the
last round agree (patches in both, largest difference of the TIL-positive probability).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slide_bench import add_slide_and_model_arguments, reduced_spec, synthetic_slide

from nar_search.models.export import TORCHSCRIPT_FILE, WSINFER_CONFIG_FILE

WSINFER = ("wsinfer[openslide]==0.6.1", "zarr<3", "openslide-bin")
TIL_COLUMN = "prob_til-positive"
AGREEMENT = 0.05  # largest difference of a patch's TIL-positive probability for the maps to agree


def refuse(message: str) -> NoReturn:
    """Bad input or a missing tool: one line, exit 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def lone_slide(work: Path, width: int, height: int, mpp: float) -> Path:
    """The slide, refused if its folder holds other files: WSInfer would take them for slides."""
    path = synthetic_slide(work / "slides", width, height, mpp)
    others = sorted(p.name for p in path.parent.iterdir() if p != path)
    if others:
        refuse(f"{path.parent} holds {', '.join(others[:3])} beside the slide, which WSInfer would take for slides: move them away")
    return path


def random_export(work: Path, arch: str, input_size: int, phi: float) -> Path:
    """An export folder of a randomly initialised (seed 0) reduced network, written once."""
    folder = work / "exports" / f"{arch}-{input_size}px-phi{phi:g}"
    if folder.exists():
        return folder
    import torch

    from nar_search.models.export import export_model
    from nar_search.prediction.network import training_preprocessing

    print(f"exporting a random {arch} reduced at ϕ {phi:g} to {folder} (once)")
    spec = reduced_spec(arch, input_size, phi)
    torch.manual_seed(0)
    about = {"source": "bench/predict_vs_wsinfer.py, untrained"}
    export_model(spec.build().eval(), spec, training_preprocessing(spec), folder, about=about)
    return folder


def wsinfer_environment(home: Path, threads: int) -> dict[str, str]:
    """WSInfer's variables: a home whose empty model-zoo registry lets it start offline (it loads
    the registry to list its zoo's models before parsing any argument), and the CPU forced."""
    registry = home / ".wsinfer-zoo" / "wsinfer-zoo-registry.json"
    if not registry.exists():
        registry.parent.mkdir(parents=True, exist_ok=True)
        registry.write_text(json.dumps({"models": {}}) + "\n")
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "HOME": str(home), "HF_HUB_OFFLINE": "1", "WSINFER_FORCE_CPU": "1"}


def wsinfer_executable(environment: Path, variables: dict[str, str], log: Path) -> Path:
    """WSInfer's command in `environment`, installed there first (pip writing to `log`) unless it
    already runs. Exits with one line saying how to install it by hand when pip cannot."""
    executable = environment / "bin" / "wsinfer"
    if _runs([str(executable), "--version"], variables):
        return executable
    if environment.exists() and any(environment.iterdir()) and not (environment / "pyvenv.cfg").exists():
        refuse(f"{environment} is not a virtual environment: choose another --wsinfer-venv")
    # The same torch release as ours: TorchScript written by a newer torch may not load in an
    # older one, and both processes then pay the same start-up.
    requirements = [*WSINFER, f"torch=={version('torch').split('+')[0]}"]
    print(f"installing WSInfer into {environment} (once, several minutes: torch is large; pip's log in {log})")
    created = not environment.exists()
    venv.EnvBuilder(with_pip=True).create(environment)
    with log.open("w") as output:
        pip = [str(environment / "bin" / "python"), "-m", "pip", "install", *requirements]
        installed = subprocess.run(pip, stdout=output, stderr=subprocess.STDOUT, check=False).returncode == 0
    if not installed or not _runs([str(executable), "--version"], variables):
        if created:
            shutil.rmtree(environment)
        quoted = " ".join(f"'{r}'" for r in requirements)
        refuse(
            f"pip could not install WSInfer (see {log}): install it by hand, `python -m venv {environment} && "
            f"{environment}/bin/pip install {quoted}`, then run this again"
        )
    return executable


def _runs(command: list[str], variables: dict[str, str]) -> bool:
    try:
        return subprocess.run(command, env=variables, capture_output=True, check=False).returncode == 0
    except OSError:
        return False


def timed(command: list[str], variables: dict[str, str], log: Path) -> float:
    """Seconds from the process's start to its exit; exits naming the log if it fails."""
    with log.open("w") as output:
        start = time.perf_counter()
        process = subprocess.run(command, env=variables, stdout=output, stderr=subprocess.STDOUT, check=False)
        seconds = time.perf_counter() - start
    if process.returncode:
        sys.exit(f"error: {command[0]} exited with {process.returncode}: see {log}")
    return seconds


def til_map(path: Path) -> dict[tuple[int, int], float]:
    """A WSInfer-style CSV as {(minx, miny): TIL-positive probability}."""
    with path.open(newline="") as file:
        return {(int(float(row["minx"])), int(float(row["miny"]))): float(row[TIL_COLUMN]) for row in csv.DictReader(file)}


def agreement(ours: dict[tuple[int, int], float], theirs: dict[tuple[int, int], float]) -> str:
    common = ours.keys() & theirs.keys()
    if not common:
        return "no patch in both maps: the tools tiled the slide differently"
    differences = [abs(ours[key] - theirs[key]) for key in common]
    # A random network's probabilities spread little, so small differences alone prove little.
    try:
        correlation = statistics.correlation([ours[key] for key in common], [theirs[key] for key in common])
    except statistics.StatisticsError:  # fewer than two patches, or constant probabilities
        correlation = float("nan")
    verdict = "agree" if max(differences) <= AGREEMENT else f"DISAGREE (more than {AGREEMENT:g})"
    return (
        f"{len(common)} patches in both, {len(ours) - len(common)} in nar's only, {len(theirs) - len(common)} in WSInfer's only; "
        f"TIL-positive probability differs by {statistics.mean(differences):.2g} on average, {max(differences):.2g} at most, "
        f"correlation {correlation:.4f}: {verdict}"
    )


@dataclass(frozen=True)
class Tool:
    """One tool's command line and environment, and where it writes the slide's CSV."""

    name: str
    command: list[str]
    variables: dict[str, str]
    out: Path
    csv: Path


def tools(args: argparse.Namespace, work: Path, slide: Path, export: Path, wsinfer: Path, wsinfer_variables: dict[str, str]) -> list[Tool]:
    nar_out, wsinfer_out = work / "outputs" / "nar", work / "outputs" / "wsinfer"
    batch = ["--batch-size", str(args.batch_size)]
    nar = [
        str(Path(sys.executable).with_name("nar")),
        "predict",
        str(slide),
        "--model",
        str(export),
        "--out",
        str(nar_out),
        *batch,
        "--workers",
        str(args.workers),
        "--device",
        "cpu",
        "--engine",
        "onnx",  # the engine the figures below were measured with; auto would spend seconds choosing it again each round
    ]
    wsinfer_run = [
        str(wsinfer),
        "run",
        "--wsi-dir",
        str(slide.parent),
        "--results-dir",
        str(wsinfer_out),
        "--model-path",
        str(export / TORCHSCRIPT_FILE),
        "--config",
        str(export / WSINFER_CONFIG_FILE),
        *batch,
        "--num-workers",
        str(args.workers),
        "--seg-binary-threshold",
        str(args.wsinfer_threshold),
    ]
    return [
        Tool("nar", nar, {**os.environ, "OMP_NUM_THREADS": str(args.threads)}, nar_out, nar_out / slide.stem / f"{slide.stem}.csv"),
        Tool("WSInfer", wsinfer_run, wsinfer_variables, wsinfer_out, wsinfer_out / "model-outputs-csv" / f"{slide.stem}.csv"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_slide_and_model_arguments(parser)
    parser.add_argument("--work", type=Path, default=Path("runs/predict-vs-wsinfer"), help="slides, export, WSInfer's environment, outputs")
    parser.add_argument("--wsinfer-venv", type=Path, help="WSInfer's virtual environment (default: WORK/wsinfer-venv)")
    parser.add_argument("--workers", type=int, default=1, help="patch-reading workers of each tool (nar predict's CPU default)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="OpenMP threads of each tool")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tool, which first alternating")
    parser.add_argument(
        "--wsinfer-threshold",
        type=int,
        default=10,
        help="WSInfer's tissue threshold on the 0-255 saturation (its default, 7, takes the synthetic glass, at 8, for tissue)",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.model and not all((args.model / name).is_file() for name in (TORCHSCRIPT_FILE, WSINFER_CONFIG_FILE)):
        parser.error(f"--model {args.model} lacks {TORCHSCRIPT_FILE} or {WSINFER_CONFIG_FILE}: give a folder written by `nar export`")
    work = args.work.resolve()

    wsinfer_variables = wsinfer_environment(work / "wsinfer-home", args.threads)
    wsinfer = wsinfer_executable((args.wsinfer_venv or work / "wsinfer-venv").resolve(), wsinfer_variables, work / "wsinfer-install.log")
    slide = lone_slide(work, args.width, args.height, args.mpp)
    export = args.model.resolve() if args.model else random_export(work, args.arch, args.input_size, args.phi)
    nar, wsinfer_tool = both = tools(args, work, slide, export, wsinfer, wsinfer_variables)
    print(f"slide        {slide} ({args.width} x {args.height} px at {args.mpp:g} µm/px)")
    print(f"model        {export}")
    print(
        f"setting      each tool: {args.threads} OpenMP threads, batch {args.batch_size}, {args.workers} reading workers, CPU; "
        f"WSInfer reads with OpenSlide, as nar does, and finds tissue above saturation {args.wsinfer_threshold}"
    )

    seconds: dict[str, list[float]] = {tool.name: [] for tool in both}
    patches: dict[str, int] = {}
    for round_ in range(1, args.rounds + 1):
        order = both if round_ % 2 else both[::-1]
        for tool in order:
            shutil.rmtree(tool.out, ignore_errors=True)  # the previous round's: WSInfer skips slides it has mapped
            tool.out.parent.mkdir(parents=True, exist_ok=True)
            seconds[tool.name].append(timed(tool.command, tool.variables, work / f"{tool.name.lower()}.log"))
            patches[tool.name] = len(til_map(tool.csv))
        rates = ", ".join(f"{name} {times[-1]:6.1f} s ({patches[name] / times[-1]:6.1f} patches/s)" for name, times in seconds.items())
        print(
            f"round {round_}      {rates}: nar {seconds['WSInfer'][-1] / seconds['nar'][-1]:.2f}x as fast "
            f"({' first, '.join(tool.name for tool in order)} second)"
        )

    for name, times in seconds.items():
        median = statistics.median(times)
        print(
            f"{name:<12} {median:.1f} s per slide, {patches[name] / median:.1f} patches/s "
            f"({patches[name]} patches; median of {len(times)} rounds)"
        )
    ratios = [theirs / ours for ours, theirs in zip(seconds["nar"], seconds["WSInfer"])]
    print(
        f"ratio        nar {statistics.median(ratios):.2f}x as fast as WSInfer per slide "
        f"(median of {len(ratios)} rounds; {min(ratios):.2f} to {max(ratios):.2f})"
    )
    print(f"maps         {agreement(til_map(nar.csv), til_map(wsinfer_tool.csv))}")


if __name__ == "__main__":
    main()
