"""nar predict's engines (issue 15): PyTorch, ONNX Runtime and its INT8 quantisation give the
float32 PyTorch probabilities (INT8: the same calls, and says how far it agrees), and the GPU
path is not taken on a CPU. What --engine auto measures and records: test_prediction_engine_choice."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import run_cli
from test_predict import detector, quick_engine_choice  # noqa: F401  (a known TIL detector, exported; auto kept short)

from nar_search.data.tiling import tile_slide
from nar_search.models.errors import ModelError
from nar_search.models.export import ExportedModel, export_model, load_export
from nar_search.models.reduce import nar_reduce
from nar_search.models.registry import original_spec
from nar_search.prediction import run
from nar_search.prediction.engines import ClassProbabilities, auto_engines, resolve_engine
from nar_search.prediction.network import training_preprocessing
from nar_search.prediction.predictor import SlidePredictor
from nar_search.prediction.reading import CALIBRATION_PATCHES, slide_calibration_patches


@pytest.fixture(scope="module")
def network(tmp_path_factory) -> Path:
    """A reduced resnet18 (32 px), randomly initialised: convolutions, batch norm, residuals."""
    spec = nar_reduce(original_spec("resnet18", 48), 3)
    torch.manual_seed(0)
    return export_model(spec.build(), spec, training_preprocessing(spec), tmp_path_factory.mktemp("exports") / "resnet18")


def float32_pytorch(exported: ExportedModel, patches: torch.Tensor) -> torch.Tensor:
    """The reference: the network as rebuilt, default layout, float32, normalised as in training."""
    mean = torch.tensor(exported.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(exported.preprocessing.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return exported.model.eval()(((patches.float() / 255) - mean) / std).softmax(dim=1)


def tissue_and_noise(slide: Path, side: int) -> torch.Tensor:
    """Tissue patches of the slide and as many patches of uniform noise, uint8."""
    tissue = slide_calibration_patches(tile_slide(slide, skip_blank=False), side)
    noise = np.random.default_rng(0).integers(0, 256, tissue.shape, dtype=np.uint8)
    return torch.from_numpy(np.concatenate([tissue, noise]))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_every_float_engine_gives_pytorchs_float32_probabilities(engine, network, synthetic_slide):
    predictor = SlidePredictor(load_export(network), device="cpu", engine=engine, show_progress=False)
    patches = tissue_and_noise(synthetic_slide, predictor.input_size)
    expected = float32_pytorch(load_export(network), patches)
    with torch.inference_mode():
        actual = predictor.net(patches)
    assert len(patches) > 100 and actual.dtype == torch.float32
    assert (actual - expected).abs().max().item() < 1e-3


def test_pytorch_on_a_cpu_runs_channels_last_in_float32(network):
    net = SlidePredictor(load_export(network), device="cpu", engine="torch").net
    assert not net.half  # float16 autocast is for GPUs only
    convolutions = [p for p in net.parameters() if p.dim() == 4]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)


@pytest.mark.slow
def test_the_gpus_float16_path_keeps_float32s_probabilities(network, synthetic_slide):
    """Run on the CPU under CPU autocast: the numbers float16 gives, not a GPU's speed."""
    exported = load_export(network)
    patches = tissue_and_noise(synthetic_slide, exported.preprocessing.input_size)
    with torch.inference_mode():
        half = ClassProbabilities(exported, half=True)(patches)
    assert (half - float32_pytorch(exported, patches)).abs().max().item() < 1e-3


def test_auto_measures_every_engine_on_a_cpu_and_takes_pytorch_alone_without_model_onnx(network):
    exported = load_export(network)
    assert auto_engines(torch.device("cpu"), exported)[0] == ("onnx", "torch", "onnx-int8")  # float32 reference first
    pending = SlidePredictor(exported, device="cpu")
    assert pending.engine == "auto" and pending.choice is None and pending.model["engine"] == "auto"  # chosen on the first slide
    in_memory = ExportedModel(Path("(in memory)"), exported.spec, exported.preprocessing, network=exported.model)
    alone = SlidePredictor(in_memory, device="cpu")  # as bench/predict_throughput.py builds it
    assert alone.engine == "torch" and alone.choice is not None and "no model.onnx" in alone.choice.reason
    assert alone.model["engine_choice"]["engine"] == "torch"


def test_onnx_runtime_engines_refuse_a_gpu_in_one_line(network):
    exported = load_export(network)
    for engine in ("onnx", "onnx-int8"):
        with pytest.raises(ModelError, match="runs on the CPU") as error:
            resolve_engine(engine, torch.device("cuda"), exported)
        assert "--device cpu" in str(error.value) and "\n" not in str(error.value)
    assert resolve_engine("auto", torch.device("cuda"), exported) == "torch"


@pytest.mark.slow
def test_onnx_runtime_runs_whole_batches_side_by_side_and_maps_them_in_grid_order(network, synthetic_slide):
    predictor = SlidePredictor(load_export(network), batch_size=4, device="cpu", engine="onnx", show_progress=False)
    net = predictor.net
    assert net.session.get_session_options().intra_op_num_threads == 1 and net.concurrent_batches == torch.get_num_threads()
    grid = tile_slide(synthetic_slide, skip_blank=False)
    net.concurrent_batches = 1
    one_at_a_time = predictor.probabilities(grid)
    for concurrent in (3, 8):
        net.concurrent_batches = concurrent
        assert np.array_equal(predictor.probabilities(grid), one_at_a_time, equal_nan=True)
    mapped = one_at_a_time[~np.isnan(one_at_a_time).any(axis=1)]
    assert len(grid) > 2 * 8 * predictor.batch_size and len(np.unique(mapped[:, 0])) > len(mapped) // 2  # many batches, patches that differ


def int8_summary(out: Path, slide: Path) -> dict:
    return json.loads((out / slide.stem / "summary.json").read_text())


@pytest.mark.slow
def test_int8_maps_a_slide_and_reports_its_agreement_with_float32(detector, synthetic_slide, tmp_path):  # noqa: F811
    out = tmp_path / "maps"
    assert run_cli("predict", synthetic_slide, "--model", detector, "--out", out, "--engine", "onnx-int8", "--workers", 0) == 0
    summary = int8_summary(out, synthetic_slide)
    assert summary["model"]["engine"] == "onnx-int8" and summary["model"]["sha256"] == load_export(detector).sha256
    int8 = summary["int8"]
    # The agreement reported is the cached INT8 model's against float32 on the slide's calibration patches.
    (model,) = (out / ".int8-cache").glob("*.onnx")
    exported = load_export(detector)
    patches = slide_calibration_patches(tile_slide(synthetic_slide, skip_blank=False), exported.preprocessing.input_size)
    assert int8["calibration"] == "slide" and int8["calibration_patches"] == len(patches) > 50
    assert len(patches) <= CALIBRATION_PATCHES
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = float32_pytorch(exported, torch.from_numpy(patches))
    normalised = (patches / 255 - np.reshape(exported.preprocessing.mean, (1, 3, 1, 1))) / np.reshape(
        exported.preprocessing.std, (1, 3, 1, 1)
    )
    quantised = torch.from_numpy(session.run(None, {"input": normalised.astype(np.float32)})[0]).softmax(dim=1)
    assert int8["agreement"] == pytest.approx(((expected[:, 1] >= 0.5) == (quantised[:, 1] >= 0.5)).float().mean().item())
    assert int8["max_abs_difference"] == pytest.approx((expected - quantised).abs().max().item(), abs=1e-5)
    assert int8["agreement"] >= 0.99 and 0 < int8["max_abs_difference"] < 0.1
    # The whole map makes float32's calls.
    assert run_cli("predict", synthetic_slide, "--model", detector, "--out", tmp_path / "fp32", "--engine", "onnx", "--workers", 0) == 0
    til, til_fp32 = (
        np.loadtxt(folder / synthetic_slide.stem / f"prediction-{synthetic_slide.stem}")[:, 2] for folder in (out, tmp_path / "fp32")
    )
    assert len(til) == len(til_fp32) > 50 and np.mean((til >= 0.5) == (til_fp32 >= 0.5)) >= 0.98


@pytest.mark.slow
def test_int8_models_are_cached_by_export_and_calibration(detector, synthetic_slide, patch_folder, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "maps"
    arguments = ["predict", synthetic_slide, "--model", detector, "--out", out, "--engine", "onnx-int8", "--workers", 0]
    assert run_cli(*arguments) == 0
    cache = {path: path.stat().st_mtime_ns for path in (out / ".int8-cache").iterdir()}
    assert len(cache) == 2  # the model and its agreement
    assert run_cli(*arguments, "--overwrite") == 0
    assert {path: path.stat().st_mtime_ns for path in (out / ".int8-cache").iterdir()} == cache  # reused, not made again
    assert "call for only" not in capsys.readouterr().out  # 99.5% or more of the slide's calls kept
    # Calibrated on a folder of patches instead: a model of its own, named in the summary.
    assert run_cli(*arguments, "--overwrite", "--calibration", patch_folder) == 0
    assert len(list((out / ".int8-cache").glob("*.onnx"))) == 2
    int8 = int8_summary(out, synthetic_slide)["int8"]
    assert int8["calibration"] == str(patch_folder) and int8["calibration_patches"] == 60


def test_int8_says_so_in_one_line_when_it_agrees_too_little(detector, synthetic_slide, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr(run, "INT8_AGREEMENT", 1.01)  # more than any agreement
    assert run_cli("predict", synthetic_slide, "--model", detector, "--out", tmp_path, "--engine", "onnx-int8", "--workers", 0) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "INT8" in warnings[0] and synthetic_slide.name in warnings[0]
    assert "--engine auto" in warnings[0] and "--engine onnx" in warnings[0]  # the advice


def test_int8_says_so_when_it_runs_slower_than_float32(detector, synthetic_slide, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr(run, "INT8_SLOWER", 100.0)  # as if it ran at a hundredth of float32's speed
    assert run_cli("predict", synthetic_slide, "--model", detector, "--out", tmp_path, "--engine", "onnx-int8", "--workers", 0) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    speed = int8_summary(tmp_path, synthetic_slide)["int8"]["speed_vs_float32"]
    assert len(warnings) == 1 and f"ran at {speed:.2f}x float32's speed" in warnings[0] and "--engine auto" in warnings[0]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--engine", "fast"], "unknown engine 'fast'"),
        (["--calibration", "."], "--calibration calibrates --engine onnx-int8 only"),
        (["--engine", "onnx-int8", "--calibration", "no-such-folder"], "is not a folder"),
    ],
)
def test_bad_engine_options_are_one_line_and_leave_no_out(extra, expected, detector, synthetic_slide, tmp_path, capsys):  # noqa: F811
    assert run_cli("predict", synthetic_slide, "--model", detector, "--out", tmp_path / "maps", *extra) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and expected in error and len(error.splitlines()) == 1
    assert not (tmp_path / "maps").exists()


@pytest.mark.slow
def test_the_onnx_engine_loads_no_model_building_library(network):
    """ONNX prediction reads the export's spec but never builds its network: timm, torchvision
    and Torch-Pruning (seconds of every process's start) stay unloaded until something does."""
    code = (
        "import sys\n"
        "from nar_search.models.export import load_export\n"
        "from nar_search.prediction.predictor import SlidePredictor\n"
        f"exported = load_export({str(network)!r})\n"
        "SlidePredictor(exported, device='cpu', engine='onnx', show_progress=False)\n"
        "builders = ('timm', 'torchvision', 'torch_pruning')\n"
        "print(sorted(m for m in builders if m in sys.modules), type(exported.model).__name__, 'timm' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["[]", "ResNet", "True"], result.stdout + result.stderr[-2000:]
