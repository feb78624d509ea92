"""Weights as safetensors: no pickle on load, and a clear error when spec and weights disagree."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from torch import nn

from models.errors import ModelError
from models.spec import ArchSpec


def save_weights(model: nn.Module, path: Path) -> None:
    save_model(model, str(path))


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} not found: export or train the model first")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ModelError(f"{path} is not a readable safetensors file ({error})") from None
    expected = model.state_dict()
    mismatched = sorted(k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape)
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if mismatched or missing or unexpected:
        problem = mismatched[:1] or missing[:1] or unexpected[:1]
        raise ModelError(
            f"weights {path} do not fit the architecture spec ({len(mismatched)} tensors of another shape, "
            f"{len(missing)} missing, {len(unexpected)} unexpected, e.g. {problem[0]!r}): "
            "the spec and the weights come from different models"
        )
    model.load_state_dict(state, strict=True)
    return model


def build_with_weights(spec: ArchSpec, path: Path) -> nn.Module:
    return load_weights(spec.build(), path).eval()
