"""The base network: the user's trained original (ϕ = 0) network that a study reduces.

It is given as what `nar train` or `nar export` wrote (a folder with `spec.json` and
`model.safetensors`), or as a plain state dict of the same timm architecture (safetensors,
or `.pt`/`.pth` read without pickle). Either way it is checked against the original spec of
the model being reduced before anything trains."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nar_search.models.errors import ModelError
from nar_search.models.export import METADATA_FILE, verify_checksums
from nar_search.models.registry import original_spec
from nar_search.models.spec import ArchSpec, spec_from_json
from nar_search.models.weights import SPEC_FILE, WEIGHTS_FILE, check_state, read_state


@dataclass(frozen=True)
class BaseNetwork:
    spec: ArchSpec
    state: dict[str, torch.Tensor]

    def build(self) -> nn.Module:
        """The base network with its trained weights, in eval mode."""
        model = self.spec.build()
        model.load_state_dict(self.state, strict=True)
        return model.eval()


def load_base(path: Path, model_name: str, input_size: int | None = None, num_classes: int = 2) -> BaseNetwork:
    """Reads the base at `path` and checks it is the original `model_name` (unreduced, at
    `input_size` when given, else at the side its spec names or timm's default) with weights
    that fit; every mismatch is one line saying what to change."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"base network {path} not found: give the folder `nar train` or `nar export` wrote, or a weights file")
    if path.is_dir():
        if (path / METADATA_FILE).is_file():  # an export: its files must be the ones exported
            verify_checksums(path)
        spec = _folder_spec(path, model_name, input_size, num_classes)
        weights = path / WEIGHTS_FILE
    else:
        spec, weights = original_spec(model_name, input_size, num_classes), path
    state = read_state(weights)
    check_state(spec.build(), state, weights)
    return BaseNetwork(spec, state)


def _folder_spec(folder: Path, model_name: str, input_size: int | None, num_classes: int) -> ArchSpec:
    """The original spec that the folder's spec.json describes (a ϕ = 0 trial's spec, with
    its method and rounding recorded, is the original network)."""
    missing = [name for name in (SPEC_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise ModelError(
            f"base network folder {folder} has no {' or '.join(missing)}: give a folder that `nar train` or "
            "`nar export` wrote, or the weights file itself"
        )
    spec = spec_from_json((folder / SPEC_FILE).read_text())
    if spec.model_name != model_name:
        raise ModelError(f"base network {folder} is a {spec.model_name}, not a {model_name}: set the model to {spec.model_name}")
    reduction = spec.reduction
    if reduction.method == "resrep" or reduction.phi != 0:
        how = reduction.method if reduction.method == "resrep" else f"{reduction.method} ϕ {reduction.phi:g}"
        raise ModelError(f"base network {folder} is already reduced ({how}): give the original (ϕ = 0) network")
    if spec.num_classes != num_classes:
        raise ModelError(f"base network {folder} has {spec.num_classes} classes, not {num_classes}: give a {num_classes}-class network")
    if input_size is not None and spec.input_size != input_size:
        raise ModelError(
            f"base network {folder} takes {spec.input_size} px inputs, not {input_size} px: "
            f"set the input size to {spec.input_size} or leave it out"
        )
    original = original_spec(model_name, spec.input_size, num_classes)
    if _shapes(spec) != _shapes(original):
        raise ModelError(f"base network {folder} is not shaped as the original {model_name}: give the original network")
    return original


def _shapes(spec: ArchSpec) -> dict[str, torch.Size]:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return {name: tensor.shape for name, tensor in spec.build().state_dict().items()}
