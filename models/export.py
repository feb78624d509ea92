"""An exported model: one folder with what inference needs in the formats tools read.

- `spec.json` + `model.safetensors`: rebuild the network without pickle (what `nar predict` loads);
- `model.torchscript.pt` + `config.json`: a WSInfer model (TorchScript and its model config);
- `model.onnx`: ONNX with a dynamic batch dimension, for ONNX Runtime and MLflow;
- `preprocessing.json`: how patches become inputs; `metadata.json`: where the model came from
  and the SHA-256 of every other file, which every load checks.

Every format is read back and compared with the PyTorch model before the folder appears;
the folder is written whole or not at all, and replaces only a previous export.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from nar_search.models.cost import spec_cost
from nar_search.models.errors import ModelError
from nar_search.models.spec import ArchSpec, spec_from_json
from nar_search.models.weights import SPEC_FILE, WEIGHTS_FILE, build_with_weights, file_sha256, save_weights

TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
PREPROCESSING_FILE = "preprocessing.json"
METADATA_FILE = "metadata.json"
WSINFER_CONFIG_FILE = "config.json"
EXPORT_FILES = (
    SPEC_FILE,
    WEIGHTS_FILE,
    TORCHSCRIPT_FILE,
    ONNX_FILE,
    PREPROCESSING_FILE,
    WSINFER_CONFIG_FILE,
    METADATA_FILE,
)
_LOADED_FILES = (SPEC_FILE, WEIGHTS_FILE, PREPROCESSING_FILE)  # what load_export reads
TOLERANCE = 1e-4  # largest difference of any output from PyTorch's, absolute and relative
_TRACE_BATCH, _CHECK_BATCH = 2, 3  # checking at another batch size than traced proves the batch is dynamic


@dataclass(frozen=True)
class Preprocessing:
    """How a patch of `patch_um` micrometres becomes the network's input: resampled to
    input_size pixels, scaled to [0, 1], normalised by mean and std per RGB channel."""

    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    patch_um: float = 50.0

    @property
    def um_per_px(self) -> float:
        return self.patch_um / self.input_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "patch_um": self.patch_um,
            "um_per_px": self.um_per_px,
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names),
            "input": "float32 N x 3 x input_size x input_size, RGB scaled to [0, 1], then (x - mean) / std",
            "output": "logits N x len(class_names); softmax gives the class probabilities",
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: Path) -> Preprocessing:
        try:
            return cls(
                input_size=int(data["input_size"]),
                mean=tuple(data["mean"]),
                std=tuple(data["std"]),
                class_names=tuple(data["class_names"]),
                patch_um=float(data["patch_um"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(
                f"{origin} is not a valid preprocessing file ({type(error).__name__}: {error}): export the model again"
            ) from None


def wsinfer_config(spec: ArchSpec, preprocessing: Preprocessing) -> dict[str, Any]:
    """WSInfer's model config (spec 1.0) for the TorchScript model: WSInfer cuts patches of
    patch_size_pixels at spacing_um_px, i.e. patch_um wide, and applies `transform`."""
    return {
        "spec_version": "1.0",
        "architecture": spec.model_name,
        "num_classes": spec.num_classes,
        "class_names": list(preprocessing.class_names),
        "patch_size_pixels": preprocessing.input_size,
        "spacing_um_px": preprocessing.um_per_px,
        "transform": [
            {"name": "Resize", "arguments": {"size": preprocessing.input_size}},
            {"name": "ToTensor"},
            {"name": "Normalize", "arguments": {"mean": list(preprocessing.mean), "std": list(preprocessing.std)}},
        ],
    }


def export_model(
    model: nn.Module,
    spec: ArchSpec,
    preprocessing: Preprocessing,
    out: Path,
    about: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the export folder `out` for `model` (built from `spec`, moved to the CPU); `about`
    (source, metrics) goes into metadata.json. With `overwrite`, a previous export at `out` is
    replaced. Raises ModelError, leaving `out` untouched, if `out` holds anything else, if a
    format cannot be written or if its outputs differ from PyTorch's."""
    out = Path(out)
    check_export_target(out, overwrite)
    if preprocessing.input_size != spec.input_size:
        raise ModelError(f"preprocessing input side {preprocessing.input_size} px differs from the spec's {spec.input_size} px")
    if len(preprocessing.class_names) != spec.num_classes:
        raise ModelError(f"{len(preprocessing.class_names)} class names for a network with {spec.num_classes} outputs")
    model = model.cpu().eval()
    try:  # before the slow part: tracing, ONNX and the round trip
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as error:
        raise ModelError(f"cannot write the export {out} ({error.strerror or error}): choose another --out") from None
    try:
        _write_formats(model, spec, preprocessing, about or {}, staging)
        _check_round_trip(staging, model, spec.input_size)
        apply_umask(staging)
        _publish(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def check_export_target(out: Path, overwrite: bool) -> None:
    """Refuse an `out` whose replacement would delete or overwrite a file export did not write."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ModelError(f"{out} exists and is not a folder: choose another --out")
    entries = list(out.iterdir()) if out.exists() else []
    if entries and not overwrite:
        raise ModelError(f"{out} already exists: choose another --out or pass --overwrite to replace the export in it")
    foreign = sorted(p.name for p in entries if p.name not in EXPORT_FILES or p.is_symlink() or not p.is_file())
    if foreign:
        raise ModelError(
            f"{out} holds files that nar export did not write ({', '.join(foreign[:3])}), which --overwrite "
            "would lose: move them away or choose another --out"
        )


def _write_formats(model: nn.Module, spec: ArchSpec, preprocessing: Preprocessing, about: Mapping[str, Any], folder: Path) -> None:
    save_weights(model, folder / WEIGHTS_FILE)
    _write_json(folder / SPEC_FILE, spec.to_dict())
    _write_json(folder / PREPROCESSING_FILE, preprocessing.to_dict())
    _write_json(folder / WSINFER_CONFIG_FILE, wsinfer_config(spec, preprocessing))
    example = torch.randn(_TRACE_BATCH, 3, spec.input_size, spec.input_size)
    write_torchscript(model, example, folder / TORCHSCRIPT_FILE)
    write_onnx(model, example, folder / ONNX_FILE)
    cost = spec_cost(spec)
    # metadata.json comes last, so that its checksums cover every other file.
    checksums = {path.name: file_sha256(path) for path in sorted(folder.iterdir())}
    metadata = {**about, "gflops": cost.gflops, "params": cost.params, "torch": torch.__version__, "sha256": checksums}
    _write_json(folder / METADATA_FILE, metadata)


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def write_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # Deprecated in favour of torch.export, but TorchScript is what WSInfer runs.
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.trace(model, example), str(path))  # type: ignore[no-untyped-call]  # unannotated in torch
    except Exception as error:
        raise ModelError(f"cannot trace the model to TorchScript ({type(error).__name__}: {error})") from None


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    except Exception as error:
        raise ModelError(f"cannot export the model to ONNX ({type(error).__name__}: {str(error).splitlines()[0]})") from None


def _check_round_trip(folder: Path, model: nn.Module, input_size: int) -> None:
    """Read every format back from `folder` and compare its outputs on random patches with
    the model's; ModelError names the first format that differs by more than TOLERANCE."""
    import onnxruntime  # only exporting needs it, not loading an export for prediction

    batch = torch.randn(_CHECK_BATCH, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])

    def rebuilt() -> nn.Module:
        return build_with_weights(spec_from_json((folder / SPEC_FILE).read_text()), folder / WEIGHTS_FILE)

    readers: dict[str, Callable[[], torch.Tensor]] = {
        "spec + safetensors": lambda: _forward(rebuilt(), batch),
        "TorchScript": lambda: _forward(_load_torchscript(folder / TORCHSCRIPT_FILE), batch),
        "ONNX Runtime": lambda: torch.from_numpy(session.run(None, {"input": batch.numpy()})[0]),
    }
    expected = _forward(model, batch)
    for name, read in readers.items():
        actual = read()
        if actual.shape != expected.shape or not torch.allclose(actual, expected, atol=TOLERANCE, rtol=TOLERANCE):
            difference = (actual - expected).abs().max().item() if actual.shape == expected.shape else float("nan")
            raise ModelError(
                f"the {name} export does not reproduce the PyTorch model (largest difference {difference:.3g}, "
                f"tolerance {TOLERANCE:g}; shapes {tuple(actual.shape)} vs {tuple(expected.shape)}): nothing was written"
            )


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # as when tracing: WSInfer needs TorchScript
        return cast(torch.jit.ScriptModule, torch.jit.load(str(path)))  # type: ignore[no-untyped-call]  # unannotated in torch


def _forward(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return cast(torch.Tensor, model.eval()(batch))


def apply_umask(folder: Path) -> None:
    """Give a staged folder of files the modes that creating them in place would have (0o777 and
    0o666 less the umask): mkdtemp makes folders 0o700, which hides an export or a TIL map from
    the rest of the group."""
    umask = os.umask(0)  # the only way to read it is to set it
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _publish(staging: Path, out: Path, overwrite: bool) -> None:
    """Put the finished folder at `out`, replacing a previous export (with `overwrite`) only
    once it is complete. Without it, the rename itself is the check: it fails on a folder that
    another command filled since `check_export_target`, whose files are then kept."""
    if not overwrite or not out.exists():
        try:
            os.replace(staging, out)
        except OSError:
            if not os.path.lexists(out):
                raise
            again = "run the export again to replace it" if overwrite else "choose another --out, or pass --overwrite to replace it"
            raise ModelError(f"another command wrote {out} while this export ran: {again}") from None
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.replace(out, aside / out.name)
    os.replace(staging, out)
    # File by file, not rmtree: a file someone added while the export ran fails rmdir and stays.
    for name in EXPORT_FILES:
        (aside / out.name / name).unlink(missing_ok=True)
    (aside / out.name).rmdir()
    aside.rmdir()


@dataclass(frozen=True)
class ExportedModel:
    """An export's parts. Its PyTorch network is built on first use of `model`: building it
    imports timm's model code, seconds of a process's start that the ONNX engines never need."""

    folder: Path
    spec: ArchSpec
    preprocessing: Preprocessing
    # SHA-256 of metadata.json, which records every other file's: names the export's exact
    # contents (None for a network not loaded from an export folder).
    sha256: str | None = None
    network: nn.Module | None = field(default=None, repr=False)  # a network in memory, not in the folder

    @cached_property
    def model(self) -> nn.Module:
        """The network in eval mode, on the CPU: `network`, or the folder's weights (checked by
        load_export) in the spec's architecture."""
        if self.network is not None:
            return self.network
        # First use may come under inference mode, whose tensors could never train and in
        # which Torch-Pruning (the generic family's widths) cannot trace.
        with torch.inference_mode(False), torch.enable_grad():
            return build_with_weights(self.spec, self.folder / WEIGHTS_FILE)


def load_export(folder: Path) -> ExportedModel:
    """An export folder, once every file is checked against its SHA-256 in metadata.json; its
    network is rebuilt from spec.json and model.safetensors when first used."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"export folder {folder} not found: make one with `nar export ... --out {folder}`")
    verify_checksums(folder)
    spec = spec_from_json((folder / SPEC_FILE).read_text())
    try:
        preprocessing_data = json.loads((folder / PREPROCESSING_FILE).read_text())
    except json.JSONDecodeError as error:
        raise ModelError(f"{folder / PREPROCESSING_FILE} is not valid JSON ({error}): export the model again") from None
    preprocessing = Preprocessing.from_dict(preprocessing_data, folder / PREPROCESSING_FILE)
    if preprocessing.input_size != spec.input_size:
        raise ModelError(
            f"{folder}: preprocessing.json says {preprocessing.input_size} px inputs but spec.json {spec.input_size} px: "
            "the files come from different exports"
        )
    return ExportedModel(folder, spec, preprocessing, file_sha256(folder / METADATA_FILE))


def verify_checksums(folder: Path) -> None:
    """Raise ModelError, in one line, unless every file that metadata.json lists has the SHA-256
    recorded at export: damaged or edited weights load without complaint, and predict nonsense.
    An export without checksums is refused too, as it cannot be told from a tampered one."""
    missing = [name for name in (*_LOADED_FILES, METADATA_FILE) if not (folder / name).is_file()]
    if missing:
        raise ModelError(f"{folder} is not a complete export ({', '.join(missing)} missing): export the model again")
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text())
    except ValueError as error:  # not JSON, or not even text
        raise ModelError(f"{folder / METADATA_FILE} is not valid JSON ({error}): export the model again") from None
    recorded = metadata.get("sha256") if isinstance(metadata, dict) else None
    if not isinstance(recorded, dict) or not set(_LOADED_FILES) <= recorded.keys():
        raise ModelError(
            f"{folder / METADATA_FILE} records no SHA-256 of the export's files (exported by an older nar), "
            "so its integrity cannot be checked: export the model again"
        )
    for name, digest in recorded.items():
        path = folder / name
        if not path.is_file():
            raise ModelError(f"{path}, listed in {METADATA_FILE}, is missing: export the model again")
        if file_sha256(path) != digest:
            raise ModelError(
                f"{path} has changed since it was exported (its SHA-256 differs from {METADATA_FILE}'s): export the model again"
            )
