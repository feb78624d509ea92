"""Whole-slide prediction throughput against the model's pure forward throughput.

One run of a few rounds, each: the network's forward pass alone on a uint8 batch, `nar
predict`'s pipeline end to end (tissue detection and tiling, patch reading in DataLoader
workers, inference, all output files) on a synthetic slide, and the forward pass alone again,
at the same batch size and device. Prints both figures in patches per second and their ratio
for every round, the median ratio, and the peak resident memory.

    OMP_NUM_THREADS=2 .venv/bin/python bench/predict_throughput.py --width 8192 --height 8192

The slide is rendered once into --slides (rendering costs far more than predicting) and the
model is a randomly initialised reduced network unless --model names an export folder.
Peak memory covers the whole run, so it bounds what prediction needs.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nar_search.search.cli.openmp import let_openmp_threads_sleep

let_openmp_threads_sleep()  # as `nar predict` does, before torch loads

import torch  # noqa: E402
from slide_bench import add_slide_and_model_arguments, reduced_spec, synthetic_slide  # noqa: E402

from nar_search.models.export import ExportedModel, load_export  # noqa: E402
from nar_search.prediction.network import training_preprocessing  # noqa: E402
from nar_search.prediction.outputs import write_outputs  # noqa: E402
from nar_search.prediction.predictor import SlidePredictor  # noqa: E402


def forward_throughput(predictor: SlidePredictor, seconds: float) -> float:
    """Patches per second of the network alone (normalisation and softmax included) on
    uint8 batches already in memory, run as mapping runs them (SlidePredictor.scores: as many
    batches at once as the engine takes), timed for about `seconds` after a warm-up."""
    side = predictor.input_size
    batch = torch.randint(0, 256, (predictor.batch_size, 3, side, side), dtype=torch.uint8)
    warm_up = 2 * predictor.net.concurrent_batches
    for _ in predictor.scores((batch, None) for _ in range(warm_up)):
        pass
    runs, start = 0, time.perf_counter()

    def batches_for_a_while() -> Iterator[tuple[torch.Tensor, None]]:
        nonlocal runs
        while time.perf_counter() - start < seconds:
            runs += 1
            yield batch, None

    for _ in predictor.scores(batches_for_a_while()):  # the scores come back on the CPU: synchronised
        pass
    return runs * predictor.batch_size / (time.perf_counter() - start)


def reduced_model(model: str, input_size: int, phi: float) -> ExportedModel:
    """A randomly initialised reduced network, as `load_export` would return it. Not written
    to disk: exporting (ONNX tracing) would dominate the peak memory measured here."""
    spec = reduced_spec(model, input_size, phi)
    return ExportedModel(Path("(in memory)"), spec, training_preprocessing(spec), network=spec.build().eval())


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory so far (of this process, or of its largest finished child), MiB."""
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_slide_and_model_arguments(parser)
    parser.add_argument("--slides", type=Path, default=Path("outputs/bench-slides"), help="where synthetic slides are kept")
    parser.add_argument("--workers", type=int, help="patch-reading workers (default: nar predict's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--engine", default="auto", help="as nar predict's; onnx and onnx-int8 need --model (the random default network has no ONNX file)"
    )
    parser.add_argument("--forward-seconds", type=float, default=10.0, help="network-alone timing per round")
    parser.add_argument("--rounds", type=int, default=3, help="slide mappings, each between two timings of the network alone")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.engine.startswith("onnx") and not args.model:
        parser.error(f"--engine {args.engine} runs an export's model.onnx: add --model EXPORT_DIR (predict_vs_wsinfer.py writes one)")

    slide = synthetic_slide(args.slides, args.width, args.height, args.mpp)
    exported = load_export(args.model) if args.model else reduced_model(args.arch, args.input_size, args.phi)
    predictor = SlidePredictor(exported, args.batch_size, args.workers, args.device, show_progress=False, engine=args.engine)
    if predictor.engine == "auto":  # chosen on the slide, as nar predict chooses on its first
        print(f"engine       {predictor.choose_engine(predictor.tile(slide).grid).reason}")
    forward_throughput(predictor, 1.0)  # warm-up: the first batches pay for oneDNN's kernel selection
    rss_before = peak_rss_mib()  # libraries and model: torch alone maps several hundred MiB

    spec = exported.spec
    print(f"model        {spec.model_name} ({spec.family}), input {spec.input_size} px, ϕ {spec.reduction.phi:g}")
    print(
        f"setting      batch {args.batch_size}, {predictor.workers} workers, {predictor.device}, engine {predictor.engine}, "
        f"{torch.get_num_threads()} threads"
    )
    ratios = []
    for round_ in range(1, args.rounds + 1):
        # The network alone is timed just before and just after: on a shared machine the speed
        # of both drifts by several per cent within a minute.
        forward_before = forward_throughput(predictor, args.forward_seconds / 2)
        with tempfile.TemporaryDirectory() as scratch:
            start = time.perf_counter()
            prediction = predictor.predict(slide)
            write_outputs(prediction, Path(scratch))
            seconds = time.perf_counter() - start
        forward = (forward_before + forward_throughput(predictor, args.forward_seconds / 2)) / 2
        patches = len(prediction.grid)
        end_to_end, inference = patches / seconds, patches / prediction.inference_seconds
        ratios.append(end_to_end / forward)
        if round_ == 1:
            print(
                f"slide        {args.width} x {args.height} px at {args.mpp:g} µm/px: "
                f"{patches} tissue patches of {prediction.grid.patch_px} px"
            )
        print(
            f"round {round_}      forward {forward:6.1f}/s, end to end {end_to_end:6.1f}/s ({seconds:.1f} s: tiling "
            f"{prediction.tiling_seconds:.1f}, inference {prediction.inference_seconds:.1f} at {inference:.1f}/s, writing "
            f"{seconds - prediction.tiling_seconds - prediction.inference_seconds:.1f}), ratio {ratios[-1]:.2f} "
            f"(inference stage {inference / forward:.2f})"
        )
    print(
        f"ratio        {statistics.median(ratios):.2f} end to end (median of {len(ratios)} rounds; {min(ratios):.2f} to {max(ratios):.2f})"
    )
    print(
        f"peak RSS     {peak_rss_mib():.0f} MiB main process ({rss_before:.0f} MiB before mapping the slide), "
        f"{peak_rss_mib(resource.RUSAGE_CHILDREN):.0f} MiB largest worker (pages shared with the main process included)"
    )


if __name__ == "__main__":
    main()
