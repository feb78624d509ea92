"""The engines that turn uint8 patches into class probabilities: PyTorch (channels-last;
float16 on a GPU), ONNX Runtime on the export's model.onnx and ONNX Runtime on an INT8
quantisation calibrated on tissue patches; and the device and engines a run may take
(engine_choice picks one for --engine auto)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Protocol

import numpy as np
import torch
from torch import nn

from nar_search.data.tiling import SlideGrid
from nar_search.models.errors import ModelError
from nar_search.models.export import ONNX_FILE, ExportedModel, Preprocessing
from nar_search.prediction.network import TIL_THRESHOLD, til_calls
from nar_search.prediction.reading import folder_calibration_patches, slide_calibration_patches
from nar_search.prediction.staging import put_in_place

ENGINES = ("auto", "torch", "onnx", "onnx-int8")
INT8_ENGINE = "onnx-int8"
# Calibration runs an ONNX model that outputs every tensor's range; its memory grows with the
# batch: +1.37 GB at 64 patches, +450 MB at 16, +300 MB at 8 (reduced resnetv2_50, 76 px), in
# the same time.
CALIBRATION_BATCH = 8
INT8_CACHE = ".int8-cache"  # in --out: INT8 models by export, calibration patches and settings
# ONNX Runtime's static quantisation as measured on a reduced resnetv2_50 (76 px, AVX2, 2 threads,
# under load): QDQ with uint8 activations and per-channel int8 weights ran 1.9x ONNX Runtime's
# float32 (int8 activations 1.3x); quant_pre_process beforehand changed neither speed nor outputs.
QUANTISATION = "QDQ, uint8 activations, int8 weights per channel, min-max calibration"


class Engine(Protocol):
    """uint8 patches (N x 3 x side x side, on the engine's device) to class probabilities
    (N x classes, float32), callable from `concurrent_batches` threads at once."""

    concurrent_batches: int

    def __call__(self, patches: torch.Tensor) -> torch.Tensor: ...


class Normalise(nn.Module):
    """uint8 patches to the network's input: (x / 255 - mean) / std, as one multiply-add."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
        mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1)
        self.register_buffer("scale", 1 / (255 * std))
        self.register_buffer("shift", -mean / std)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return patches.float() * self.scale + self.shift


class ClassProbabilities(nn.Module):
    """uint8 patches in, class probabilities out (N x classes, in the export's class order): the
    export's normalisation and the softmax folded around the network, so that workers ship
    compact uint8 batches. Patches go channels-last, the layout oneDNN's and cuDNN's fastest
    convolutions take; `half` runs the network under float16 autocast (for GPUs)."""

    concurrent_batches = 1  # PyTorch's threads share each batch's layers, on a GPU its stream
    half: bool  # type: ignore[assignment]  # a flag in place of nn.Module.half(), which this module never needs

    def __init__(self, exported: ExportedModel, half: bool = False) -> None:
        super().__init__()
        self.normalise = Normalise(exported.preprocessing)
        self.network = exported.model
        self.half = half

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        inputs = self.normalise(patches.contiguous(memory_format=torch.channels_last))
        with torch.autocast(inputs.device.type, torch.float16, enabled=self.half):
            logits: torch.Tensor = self.network(inputs)
        return logits.float().softmax(dim=1)


def torch_engine(exported: ExportedModel, device: torch.device) -> ClassProbabilities:
    """The network in PyTorch on `device`, its weights channels-last: 1.3-1.5x the speed of the
    default layout on a CPU (resolve_engine's note), and what GPUs' tensor cores need. On a GPU
    it runs in float16, not bfloat16: under CPU autocast, the reduced resnetv2_50's float16
    probabilities stayed within 2.2e-4 of float32's, bfloat16's only within 2.0e-3, over the
    1e-3 every engine keeps (its speed on a GPU is not measured yet)."""
    net = ClassProbabilities(exported, half=device.type == "cuda")
    net.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack memory_format with a device
    return net.eval()


class OnnxProbabilities:
    """ClassProbabilities on ONNX Runtime's CPU provider: the same normalisation and softmax
    around an ONNX model of the network (the export's model.onnx, or an INT8 quantisation).

    One single-threaded session, called from `concurrent_batches` threads at once (one per
    core; its `run` is thread-safe and frees the GIL; SlidePredictor.scores does the calling):
    small patches leave a layer too little work to share between threads, so whole batches side
    by side beat threads within each layer (2 cores, reduced resnetv2_50 at 76 px, batches of
    64: 194 against 151 patches/s in alternating rounds, and a slide mapped 1.05x (0.95-1.10)
    faster than with each batch split between the threads). Single-threaded sessions have no
    threads to spin, so none takes cores from the patch readers either."""

    def __init__(self, model: Path, preprocessing: Preprocessing) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.normalise = Normalise(preprocessing)
        self.concurrent_batches = torch.get_num_threads()  # as many as PyTorch's threads would be

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {"input": self.normalise(patches).numpy()})
        return torch.from_numpy(logits).softmax(dim=1)


def quantise(model: Path, inputs: np.ndarray, target: Path) -> None:
    """ONNX Runtime's static INT8 quantisation (QUANTISATION) of the ONNX `model` into `target`,
    its activation ranges calibrated on `inputs` (network inputs, normalised)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    batches = iter({"input": batch} for batch in np.array_split(inputs, -(-len(inputs) // CALIBRATION_BATCH)))
    reader = SimpleNamespace(get_next=lambda: next(batches, None))  # a CalibrationDataReader
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its advice (pre-processing, formats) goes to the root logger
    try:
        quantize_static(
            model,
            target,
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    finally:
        logging.disable(disabled)


class Int8Engines:
    """INT8 engines of an export: ONNX Runtime's static quantisation of its model.onnx,
    calibrated on each slide's own tissue patches or on one folder of patches, with its agreement
    with `reference` (the float32 model) on them. Kept in `cache` (when given) by export,
    calibration patches and settings: a folder's calibration is quantised once for every slide,
    shard and run; a slide's again only when the same slide is mapped again."""

    def __init__(
        self, exported: ExportedModel, reference: OnnxProbabilities, batch_size: int, cache: Path | None, folder: Path | None
    ) -> None:
        self.exported, self.reference, self.batch_size, self.cache, self.folder = exported, reference, batch_size, cache, folder
        side = exported.preprocessing.input_size
        self.folder_patches = None if folder is None else folder_calibration_patches(folder, side)
        self.latest: tuple[str, OnnxProbabilities, dict[str, object]] | None = None

    def for_slide(self, grid: SlideGrid, patches: np.ndarray | None = None) -> tuple[OnnxProbabilities, dict[str, object] | None]:
        """The INT8 engine for the slide and its report for summary.json; the float32 engine and
        None when there is no patch to calibrate on (a slide without tissue). `patches`: its
        calibration patches, when read already."""
        if patches is None:
            side = self.exported.preprocessing.input_size
            patches = self.folder_patches if self.folder_patches is not None else slide_calibration_patches(grid, side)
        if not len(patches):
            return self.reference, None
        key = self._key(patches)
        if self.latest is None or self.latest[0] != key:
            self.latest = (key, *self._made(key[:32], patches))
        _, engine, report = self.latest
        return engine, {"calibration": str(self.folder or "slide"), **report}

    def made_before(self, patches: np.ndarray) -> dict[str, object] | None:
        """The report of the INT8 engine calibrated on `patches` if it is made already (in this
        run, or kept in the cache), else None: then for_slide would calibrate one."""
        key = self._key(patches)
        if self.latest is not None and self.latest[0] == key:
            return self.latest[2]
        if self.cache is None or not (self.cache / f"{key[:32]}.onnx").is_file():
            return None
        try:
            report = json.loads((self.cache / f"{key[:32]}.json").read_text())
        except (OSError, ValueError):
            return None
        return report if isinstance(report, dict) else None

    def _key(self, patches: np.ndarray) -> str:
        return hashlib.sha256(b"\0".join([str(self.exported.sha256).encode(), QUANTISATION.encode(), patches.tobytes()])).hexdigest()

    def _made(self, name: str, patches: np.ndarray) -> tuple[OnnxProbabilities, dict[str, object]]:
        with tempfile.TemporaryDirectory() as scratch:
            folder = self.cache or Path(scratch)
            model, report = folder / f"{name}.onnx", folder / f"{name}.json"
            if model.is_file() and report.is_file():
                return OnnxProbabilities(model, self.exported.preprocessing), json.loads(report.read_text())
            folder.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            inputs = self.reference.normalise(torch.from_numpy(patches)).numpy()
            put_in_place(model, lambda staged: quantise(self.exported.folder / ONNX_FILE, inputs, staged))
            int8 = OnnxProbabilities(model, self.exported.preprocessing)
            agreement = self.agreement(int8, patches)
            # Kept for --engine auto, which counts what a slide's calibration costs when the cache spares it.
            agreement["calibration_seconds"] = time.perf_counter() - start
            put_in_place(report, lambda staged: staged.write_text(json.dumps(agreement, indent=2) + "\n"))
            return int8, agreement

    def agreement(self, int8: OnnxProbabilities, patches: np.ndarray) -> dict[str, object]:
        """How INT8 compares with float32 on the patches: the share whose call at TIL_THRESHOLD is
        the same, the largest difference of any class probability, and INT8's speed as a
        multiple of float32's (one batch at a time each, after a first batch untimed: that pays
        for the session's set-up), for the run to say when INT8 does not pay."""
        batches = torch.split(torch.from_numpy(patches), self.batch_size)
        probabilities, seconds = [], []
        with torch.inference_mode():
            for engine in (self.reference, int8):
                engine(batches[0])
                start = time.perf_counter()
                probabilities.append(torch.cat([engine(batch) for batch in batches]).numpy())
                seconds.append(time.perf_counter() - start)
        fp32, quantised = probabilities
        names = self.exported.preprocessing.class_names
        return {
            "calibration_patches": len(patches),
            "agreement": float(np.mean(til_calls(fp32, names) == til_calls(quantised, names))),
            "max_abs_difference": float(np.abs(fp32 - quantised).max()),
            "speed_vs_float32": seconds[0] / seconds[1],
            "threshold": TIL_THRESHOLD,
            "quantisation": QUANTISATION,
        }


class EngineSet:
    """The engines of an export on a device, each built when first asked for: --engine auto
    builds those it measures, any other --engine only its own."""

    def __init__(
        self, exported: ExportedModel, device: torch.device, batch_size: int, cache: Path | None = None, calibration: Path | None = None
    ) -> None:
        self.exported, self.device, self.batch_size, self.cache, self.calibration = exported, device, batch_size, cache, calibration

    @cached_property
    def pytorch(self) -> ClassProbabilities:
        return torch_engine(self.exported, self.device)

    @cached_property
    def onnx(self) -> OnnxProbabilities:
        return OnnxProbabilities(self.exported.folder / ONNX_FILE, self.exported.preprocessing)

    @cached_property
    def int8(self) -> Int8Engines:
        return Int8Engines(self.exported, self.onnx, self.batch_size, self.cache, self.calibration)

    def net(self, engine: str) -> Engine:
        """The engine's network; for onnx-int8 its float32 reference (the INT8 network is made per
        slide, by `int8`)."""
        return self.pytorch if engine == "torch" else self.onnx


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ModelError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device} asked for but no CUDA GPU is available: use --device cpu")
    return resolved


def default_workers(device: torch.device) -> int:
    """Patch-reading workers: on a CPU one, as every core a reader takes is one torch's threads
    lose, and one reads several times faster than a reduced network classifies (see
    bench/README.md); on a GPU, every core the main process leaves free, up to 8."""
    return 1 if device.type == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))


def auto_engines(device: torch.device, exported: ExportedModel) -> tuple[tuple[str, ...], str]:
    """The engines --engine auto chooses from on `device`, the float32 reference first; and,
    when there is only one, why. ONNX Runtime is installed without a GPU provider, and it needs
    the export's model.onnx (every `nar export` writes one)."""
    if device.type != "cpu":
        return ("torch",), f"torch, the only engine on {device} (ONNX Runtime runs on the CPU only)"
    if not (exported.folder / ONNX_FILE).is_file():
        return ("torch",), f"torch, the only engine for {exported.folder}: it holds no {ONNX_FILE} for ONNX Runtime"
    return ("onnx", "torch", INT8_ENGINE), ""


def resolve_engine(engine: str, device: torch.device, exported: ExportedModel) -> str:
    """The engine `engine` names on `device`; ModelError, in one line, if it cannot run there.

    auto: the one engine auto_engines leaves on `device`, else "auto": chosen by measuring
    the engines on the first slide's patches (engine_choice). Measured before auto measured
    (2-core development machine, reduced resnetv2_50, ϕ = 2, 76 px, batches of 64 through
    SlidePredictor.scores, sleeping OpenMP threads, 7 alternating rounds): ONNX Runtime 243-247
    patches/s, PyTorch channels-last 222-239 while the machine was quiet; 1.43x (169 against
    125) while it was slowed down; INT8 1.9x ONNX Runtime with AVX2, but 0.2x on another Intel
    CPU (53 against 274 patches/s), which is why auto measures rather than assumes."""
    if engine not in ENGINES:
        raise ModelError(f"unknown engine {engine!r}: use {', '.join(ENGINES)}")
    if engine == "auto":
        candidates, _ = auto_engines(device, exported)
        return candidates[0] if len(candidates) == 1 else engine
    if engine != "torch" and device.type != "cpu":
        raise ModelError(f"--engine {engine} runs on the CPU, not on {device}: use --device cpu, or --engine torch")
    if engine != "torch" and not (exported.folder / ONNX_FILE).is_file():
        raise ModelError(
            f"{exported.folder} holds no {ONNX_FILE} for --engine {engine}: export the model with `nar export`, or use --engine torch"
        )
    return engine
