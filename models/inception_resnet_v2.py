"""Inception-ResNet-v2 with free block repeats and every conv width scaled, built from timm's
layers under timm's module names, so that the original size is exactly timm's
`inception_resnet_v2` (same parameters, state dict and outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, cast

import torch
from torch import nn

from nar_search.models.inception_v4 import Width, inception_conv
from nar_search.models.rounding import DEFAULT_ROUNDING, Rounding, scale_depth, scale_width
from nar_search.models.spec import ArchSpec, Stage, register_spec


class Mixed5b(nn.Module):
    def __init__(self, in_chs: int, width: Width) -> None:
        super().__init__()
        self.branch0 = inception_conv(in_chs, width(96), kernel_size=1)
        self.branch1 = nn.Sequential(
            inception_conv(in_chs, width(48), kernel_size=1),
            inception_conv(width(48), width(64), kernel_size=5, padding=2),
        )
        self.branch2 = nn.Sequential(
            inception_conv(in_chs, width(64), kernel_size=1),
            inception_conv(width(64), width(96), kernel_size=3, padding=1),
            inception_conv(width(96), width(96), kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
            inception_conv(in_chs, width(64), kernel_size=1),
        )
        self.out_chs = width(96) + width(64) + width(96) + width(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class Block35(nn.Module):
    """Inception-ResNet-A: residual, so the up-projection maps back to the block's own width."""

    def __init__(self, chs: int, width: Width, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = inception_conv(chs, width(32), kernel_size=1)
        self.branch1 = nn.Sequential(
            inception_conv(chs, width(32), kernel_size=1),
            inception_conv(width(32), width(32), kernel_size=3, padding=1),
        )
        self.branch2 = nn.Sequential(
            inception_conv(chs, width(32), kernel_size=1),
            inception_conv(width(32), width(48), kernel_size=3, padding=1),
            inception_conv(width(48), width(64), kernel_size=3, padding=1),
        )
        self.conv2d = nn.Conv2d(2 * width(32) + width(64), chs, kernel_size=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1))
        return cast(torch.Tensor, self.act(out * self.scale + x))


class Mixed6a(nn.Module):
    def __init__(self, in_chs: int, width: Width) -> None:
        super().__init__()
        self.branch0 = inception_conv(in_chs, width(384), kernel_size=3, stride=2)
        self.branch1 = nn.Sequential(
            inception_conv(in_chs, width(256), kernel_size=1),
            inception_conv(width(256), width(256), kernel_size=3, padding=1),
            inception_conv(width(256), width(384), kernel_size=3, stride=2),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)
        self.out_chs = 2 * width(384) + in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class Block17(nn.Module):
    """Inception-ResNet-B: residual, so the up-projection maps back to the block's own width."""

    def __init__(self, chs: int, width: Width, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = inception_conv(chs, width(192), kernel_size=1)
        self.branch1 = nn.Sequential(
            inception_conv(chs, width(128), kernel_size=1),
            inception_conv(width(128), width(160), kernel_size=(1, 7), padding=(0, 3)),
            inception_conv(width(160), width(192), kernel_size=(7, 1), padding=(3, 0)),
        )
        self.conv2d = nn.Conv2d(2 * width(192), chs, kernel_size=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x)), 1))
        return cast(torch.Tensor, self.act(out * self.scale + x))


class Mixed7a(nn.Module):
    def __init__(self, in_chs: int, width: Width) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(
            inception_conv(in_chs, width(256), kernel_size=1),
            inception_conv(width(256), width(384), kernel_size=3, stride=2),
        )
        self.branch1 = nn.Sequential(
            inception_conv(in_chs, width(256), kernel_size=1),
            inception_conv(width(256), width(288), kernel_size=3, stride=2),
        )
        self.branch2 = nn.Sequential(
            inception_conv(in_chs, width(256), kernel_size=1),
            inception_conv(width(256), width(288), kernel_size=3, padding=1),
            inception_conv(width(288), width(320), kernel_size=3, stride=2),
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)
        self.out_chs = width(384) + width(288) + width(320) + in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class Block8(nn.Module):
    """Inception-ResNet-C: residual, so the up-projection maps back to the block's own width."""

    def __init__(self, chs: int, width: Width, scale: float = 1.0, no_relu: bool = False) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = inception_conv(chs, width(192), kernel_size=1)
        self.branch1 = nn.Sequential(
            inception_conv(chs, width(192), kernel_size=1),
            inception_conv(width(192), width(224), kernel_size=(1, 3), padding=(0, 1)),
            inception_conv(width(224), width(256), kernel_size=(3, 1), padding=(1, 0)),
        )
        self.conv2d = nn.Conv2d(width(192) + width(256), chs, kernel_size=1)
        self.relu = None if no_relu else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x)), 1)) * self.scale + x
        return out if self.relu is None else cast(torch.Tensor, self.relu(out))


class InceptionResnetV2(nn.Module):
    def __init__(self, repeats: tuple[int, int, int], width: Width, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv2d_1a = inception_conv(3, width(32), kernel_size=3, stride=2)
        self.conv2d_2a = inception_conv(width(32), width(32), kernel_size=3)
        self.conv2d_2b = inception_conv(width(32), width(64), kernel_size=3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = inception_conv(width(64), width(80), kernel_size=1)
        self.conv2d_4a = inception_conv(width(80), width(192), kernel_size=3)
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)

        block35s, block17s, block8s = repeats
        self.mixed_5b = Mixed5b(width(192), width)
        chs = self.mixed_5b.out_chs
        self.repeat = nn.Sequential(*[Block35(chs, width, scale=0.17) for _ in range(block35s)])
        self.mixed_6a = Mixed6a(chs, width)
        chs = self.mixed_6a.out_chs
        self.repeat_1 = nn.Sequential(*[Block17(chs, width, scale=0.10) for _ in range(block17s)])
        self.mixed_7a = Mixed7a(chs, width)
        chs = self.mixed_7a.out_chs
        # The last Inception-ResNet-C block is timm's `block8`, without the ReLU.
        self.repeat_2 = nn.Sequential(*[Block8(chs, width, scale=0.20) for _ in range(block8s - 1)])
        self.block8 = Block8(chs, width, no_relu=True)
        self.conv2d_7b = inception_conv(chs, width(1536), kernel_size=1)

        self.num_features = width(1536)
        from timm.layers.classifier import create_classifier  # on building only: see models.spec.spec_types

        # Any drop_rate, even 0, makes create_classifier return timm's `head_drop` too.
        self.global_pool, self.head_drop, self.classif = create_classifier(self.num_features, num_classes, drop_rate=0.0)

    def get_classifier(self) -> nn.Module:
        return cast(nn.Module, self.classif)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool_3a(self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x))))
        x = self.maxpool_5a(self.conv2d_4a(self.conv2d_3b(x)))
        x = self.repeat(self.mixed_5b(x))
        x = self.repeat_1(self.mixed_6a(x))
        x = self.block8(self.repeat_2(self.mixed_7a(x)))
        return cast(torch.Tensor, self.conv2d_7b(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.classif(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def scale_repeats(repeats: tuple[int, int, int], depth_factor: float, rounding: Rounding) -> tuple[int, int, int]:
    """The authors' depth rule: their Keras code scaled the bound N + 1 of the A and B loops
    `range(1, N + 1)`; for C it scaled the bound N of the loop over all blocks but the last,
    which is always kept. So A, B: round((N + 1)·d) − 1 and C: round(N·d)."""
    block35s, block17s, block8s = repeats
    return (
        max(1, scale_depth(block35s + 1, depth_factor, rounding) - 1),
        max(1, scale_depth(block17s + 1, depth_factor, rounding) - 1),
        scale_depth(block8s, depth_factor, rounding),
    )


@register_spec
@dataclass(frozen=True, kw_only=True)
class InceptionResNetV2Spec(ArchSpec):
    family: ClassVar[str] = "inception_resnet_v2"
    exact_models: ClassVar[tuple[str, ...]] = ("inception_resnet_v2",)
    # Valid (unpadded) 3×3 convs and pools, five of them at stride 2: 75 px reach the head at
    # 1×1, 74 px end at 2×2 before Mixed-7a's 3×3 kernels.
    min_input_size: ClassVar[int] = 75

    # Block35, Block17 and Block8 blocks; the Block8 count includes timm's final `block8`.
    repeats: tuple[int, int, int] = (10, 20, 10)
    width_factor: float = 1.0  # of every conv, the stem included, relative to timm's widths
    rounding: Rounding = DEFAULT_ROUNDING

    def width(self, channels: int) -> int:
        return scale_width(channels, self.width_factor, self.rounding)

    def scaled(self, depth_factor: float, width_factor: float, rounding: Rounding) -> InceptionResNetV2Spec:
        return self.replace(
            repeats=scale_repeats(self.repeats, depth_factor, rounding),
            width_factor=width_factor,
            rounding=rounding,
        )

    def build(self) -> InceptionResnetV2:
        return InceptionResnetV2(self.repeats, self.width, self.num_classes)

    def truncate(self, original: nn.Module) -> None:
        block35s, block17s, block8s = self.repeats
        original.repeat = cast(nn.Sequential, original.repeat)[:block35s]
        original.repeat_1 = cast(nn.Sequential, original.repeat_1)[:block17s]
        original.repeat_2 = cast(nn.Sequential, original.repeat_2)[: block8s - 1]

    def stages(self) -> list[Stage]:
        # The blocks are where concatenated widths are summed: read them from a shapes-only build.
        with torch.device("meta"):
            model = self.build()
        stem = (model.conv2d_1a, model.conv2d_2a, model.conv2d_2b, model.conv2d_3b, model.conv2d_4a)
        block35s, block17s, block8s = self.repeats
        return [
            Stage("stem", 1, ", ".join(str(conv.out_channels) for conv in stem)),
            Stage("Mixed-5b", 1, str(model.mixed_5b.out_chs)),
            Stage("Inception-ResNet-A", block35s, str(model.mixed_5b.out_chs)),
            Stage("Reduction-A (Mixed-6a)", 1, str(model.mixed_6a.out_chs)),
            Stage("Inception-ResNet-B", block17s, str(model.mixed_6a.out_chs)),
            Stage("Reduction-B (Mixed-7a)", 1, str(model.mixed_7a.out_chs)),
            Stage("Inception-ResNet-C", block8s, str(model.mixed_7a.out_chs)),
            Stage("conv-7b", 1, str(model.conv2d_7b.out_channels)),
        ]
