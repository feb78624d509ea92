"""Any block-based timm CNN: depth by dropping shape-preserving blocks at the end of each
stage, width by a dependency-aware channel remover, resolution as the input side."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
from torch import nn

from nar_search.models.channels import get_classifier, shrink_widths
from nar_search.models.errors import ModelError
from nar_search.models.rounding import DEFAULT_ROUNDING, Rounding, scale_depth, scale_width
from nar_search.models.spec import ArchSpec, Stage, register_spec


def find_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, container of blocks) per stage, for timm's usual layouts."""
    stages = getattr(model, "stages", None)
    if isinstance(stages, nn.Sequential):  # resnetv2, convnext, regnet(y/z) variants
        return [(f"stages.{i}", getattr(s, "blocks", s)) for i, s in enumerate(stages)]
    if hasattr(model, "layer1"):  # resnet, resnext, seresnet
        return [(name, getattr(model, name)) for name in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, name)]
    blocks = getattr(model, "blocks", None)  # efficientnet, mobilenet
    if isinstance(blocks, nn.Sequential) and all(isinstance(b, nn.Sequential) for b in blocks):
        return [(f"blocks.{i}", b) for i, b in enumerate(blocks)]
    if hasattr(model, "s1"):  # regnet
        return [(name, getattr(model, name)) for name in ("s1", "s2", "s3", "s4") if hasattr(model, name)]
    raise ModelError(
        f"{type(model).__name__} has no stages of repeated blocks that NAR can shorten: "
        "supported timm families are resnet*, resnetv2*, efficientnet*, mobilenet*, convnext*, regnet*"
    )


def _block_shapes(model: nn.Module, stages: list[tuple[str, nn.Module]], input_size: int) -> list[list[bool]]:
    preserving: list[dict[int, bool]] = [{} for _ in stages]
    hooks = []
    for (_, stage), record in zip(stages, preserving):
        for i, block in enumerate(stage.children()):
            hooks.append(
                block.register_forward_hook(lambda _m, args, out, record=record, i=i: record.__setitem__(i, args[0].shape == out.shape))
            )
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, input_size, input_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return [[record[i] for i in sorted(record)] for record in preserving]


def drop_blocks(model: nn.Module, depths: tuple[int, ...], input_size: int) -> None:
    """Keeps the first `depths[s]` blocks of stage s; later blocks become identities."""
    stages = find_stages(model)
    for (_name, stage), keep, preserving in zip(stages, depths, _block_shapes(model, stages, input_size)):
        # A block that changes shape (stride, width) is never dropped.
        last_needed = max((i for i, ok in enumerate(preserving) if not ok), default=-1)
        for index, (child_name, _) in enumerate(list(stage.named_children())):
            if index >= max(keep, last_needed + 1):
                setattr(stage, child_name, nn.Identity())


def _refuse_grouped_convs(model: nn.Module, model_name: str) -> None:
    # Narrowing a grouped (not depthwise) conv would have to remove whole groups, which
    # the channel remover does not do: say so instead of building a broken network.
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and 1 < module.groups < module.in_channels:
            raise ModelError(
                f"{model_name} has grouped convolutions, whose width NAR cannot reduce yet: "
                "use --beta 1.0 (depth and resolution only) or another model"
            )


@register_spec
@dataclass(frozen=True, kw_only=True)
class TimmCNNSpec(ArchSpec):
    family: ClassVar[str] = "timm"

    depths: tuple[int, ...]
    width_factor: float = 1.0
    rounding: Rounding = DEFAULT_ROUNDING

    @classmethod
    def original(cls, model_name: str, input_size: int, num_classes: int = 2) -> TimmCNNSpec:
        import timm  # on building only: see models.spec.spec_types

        with torch.device("meta"):
            model = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
        depths = tuple(len(list(stage.children())) for _, stage in find_stages(model))
        return cls(model_name=model_name, input_size=input_size, num_classes=num_classes, depths=depths)

    def scaled(self, depth_factor: float, width_factor: float, rounding: Rounding) -> TimmCNNSpec:
        return self.replace(
            depths=tuple(scale_depth(d, depth_factor, rounding) for d in self.depths),
            width_factor=width_factor,
            rounding=rounding,
        )

    def build(self) -> nn.Module:
        import timm  # on building only: see models.spec.spec_types

        model = timm.create_model(self.model_name, pretrained=False, num_classes=self.num_classes)
        drop_blocks(model, self.depths, self.input_size)
        if self.width_factor != 1.0:
            _refuse_grouped_convs(model, self.model_name)
            classifier = get_classifier(model)
            shrink_widths(model, self.input_size, partial(scale_width, factor=self.width_factor, rounding=self.rounding), keep=[classifier])
        return model

    def truncate(self, original: nn.Module) -> None:
        drop_blocks(original, self.depths, self.input_size)

    def stages(self) -> list[Stage]:
        return [Stage(f"stage {i}", d, f"{self.width_factor:.3f} w") for i, d in enumerate(self.depths, start=1)]
