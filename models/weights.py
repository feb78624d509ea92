"""Weights as safetensors: no pickle on load, and a clear error when spec and weights disagree.

A plain PyTorch state dict (`.pt`, `.pth`) is read too, but only through
`torch.load(weights_only=True)`, which refuses pickled code."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from torch import nn

from nar_search.models.errors import ModelError
from nar_search.models.spec import ArchSpec

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
# A network travels as these two files: its spec and its weights.
SPEC_FILE = "spec.json"
WEIGHTS_FILE = "model.safetensors"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as exports and a study's base record them."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def save_weights(model: nn.Module, path: Path) -> None:
    save_model(model, str(path))


def save_network(model: nn.Module, spec: ArchSpec, folder: Path) -> None:
    """`spec.json` + `model.safetensors` in `folder`: what `build_with_weights` and a study's
    `base:` read back."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC_FILE).write_text(spec.to_json())
    save_weights(model, folder / WEIGHTS_FILE)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, or of a plain state dict saved by `torch.save`
    (a Lightning checkpoint's `state_dict` is taken from it)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} not found: export or train the model first")
    if path.suffix in TORCH_SUFFIXES:
        return _read_torch_state(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ModelError(f"{path} is not a readable safetensors file ({error})") from None


def _read_torch_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"{path} is not a plain PyTorch state dict ({first}): save one with torch.save(model.state_dict())") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # a Lightning checkpoint; our classifier keeps the network under `model.`
        if all(key.startswith("model.") for key in state):
            state = {key.removeprefix("model."): value for key, value in state.items()}
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} holds no state dict of tensors: save one with torch.save(model.state_dict())")
    return dict(state)


def check_state(model: nn.Module, state: Mapping[str, torch.Tensor], origin: Path | str) -> None:
    """Raises one clear line unless `state` fits `model` tensor for tensor."""
    expected = model.state_dict()
    mismatched = sorted(k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape)
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if mismatched or missing or unexpected:
        problem = mismatched[:1] or missing[:1] or unexpected[:1]
        raise ModelError(
            f"weights {origin} do not fit the architecture spec ({len(mismatched)} tensors of another shape, "
            f"{len(missing)} missing, {len(unexpected)} unexpected, e.g. {problem[0]!r}): "
            "the spec and the weights come from different models"
        )


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    state = read_state(path)
    check_state(model, state, path)
    model.load_state_dict(state, strict=True)
    return model


def build_with_weights(spec: ArchSpec, path: Path) -> nn.Module:
    return load_weights(spec.build(), path).eval()
