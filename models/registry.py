"""Model names → the original (ϕ = 0) spec of the family that can reduce them."""

from __future__ import annotations

from typing import cast

import timm
from timm.models import PretrainedCfg

from nar_search.models.errors import ModelError
from nar_search.models.spec import ArchSpec, exact_families
from nar_search.models.timm_generic import TimmCNNSpec


def default_input_size(model_name: str) -> int:
    # None is for names timm does not register, and callers pass only names that timm lists.
    return int(cast(PretrainedCfg, timm.get_pretrained_cfg(model_name)).input_size[-1])


def original_spec(model_name: str, input_size: int | None = None, num_classes: int = 2) -> ArchSpec:
    """The unreduced network as a spec, at `input_size` (default: timm's for the model)."""
    exact = exact_families()
    if model_name not in timm.list_models():
        examples = ", ".join(exact)
        raise ModelError(f"unknown model {model_name!r}: use a timm model name such as {examples}, resnet50 or efficientnet_b0")
    if num_classes < 2:
        raise ModelError(f"num_classes = {num_classes}: a classifier needs at least 2 classes")
    side = input_size or default_input_size(model_name)
    if model_name in exact:
        spec = exact[model_name](model_name=model_name, input_size=side, num_classes=num_classes)
    else:
        spec = TimmCNNSpec.original(model_name, side, num_classes)
    if side < spec.min_input_size:
        raise ModelError(f"input side {side} px is below {model_name}'s minimum of {spec.min_input_size} px: use a larger --input-size")
    return spec
