"""Inception V4 with free block repeats and every conv width scaled, built from timm's
layers under timm's module names, so that the original size is exactly timm's `inception_v4`
(same parameters, state dict and outputs)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from typing import Any, ClassVar, cast

import torch
from torch import nn

from nar_search.models.rounding import DEFAULT_ROUNDING, Rounding, scale_depth, scale_width
from nar_search.models.spec import ArchSpec, Stage, register_spec

Width = Callable[[int], int]
"""Maps one of timm's hard-coded conv widths to the width to build."""

# timm's Inception convs: unpadded unless a block says otherwise, TensorFlow's BatchNorm eps.
INCEPTION_CONV = dict(padding=0, norm_kwargs=dict(eps=1e-3), act_kwargs=dict(inplace=True))


def inception_conv(*args: Any, **kwargs: Any) -> nn.Module:
    """timm's ConvNormAct with INCEPTION_CONV's defaults (a keyword given overrides them)."""
    from timm.layers.conv_bn_act import ConvNormAct  # on building only: see models.spec.spec_types

    return ConvNormAct(*args, **{**INCEPTION_CONV, **kwargs})


class Mixed3a(nn.Module):
    def __init__(self, in_chs: int, width: Width) -> None:
        super().__init__()
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.conv = inception_conv(in_chs, width(96), kernel_size=3, stride=2)
        self.out_chs = in_chs + width(96)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.maxpool(x), self.conv(x)), 1)


class Mixed4a(nn.Module):
    def __init__(self, in_chs: int, width: Width) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(
            inception_conv(in_chs, width(64), kernel_size=1),
            inception_conv(width(64), width(96), kernel_size=3),
        )
        self.branch1 = nn.Sequential(
            inception_conv(in_chs, width(64), kernel_size=1),
            inception_conv(width(64), width(64), kernel_size=(1, 7), padding=(0, 3)),
            inception_conv(width(64), width(64), kernel_size=(7, 1), padding=(3, 0)),
            inception_conv(width(64), width(96), kernel_size=3),
        )
        self.out_chs = 2 * width(96)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x)), 1)


class Mixed5a(nn.Module):
    def __init__(self, in_chs: int, width: Width) -> None:
        super().__init__()
        self.conv = inception_conv(in_chs, width(192), kernel_size=3, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.out_chs = width(192) + in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.conv(x), self.maxpool(x)), 1)


class InceptionA(nn.Module):
    def __init__(self, in_chs: int, width: Width) -> None:
        super().__init__()
        self.branch0 = inception_conv(in_chs, width(96), kernel_size=1)
        self.branch1 = nn.Sequential(
            inception_conv(in_chs, width(64), kernel_size=1),
            inception_conv(width(64), width(96), kernel_size=3, padding=1),
        )
        self.branch2 = nn.Sequential(
            inception_conv(in_chs, width(64), kernel_size=1),
            inception_conv(width(64), width(96), kernel_size=3, padding=1),
            inception_conv(width(96), width(96), kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
            inception_conv(in_chs, width(96), kernel_size=1),
        )
        self.out_chs = 4 * width(96)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class ReductionA(nn.Module):
    def __init__(self, in_chs: int, width: Width) -> None:
        super().__init__()
        self.branch0 = inception_conv(in_chs, width(384), kernel_size=3, stride=2)
        self.branch1 = nn.Sequential(
            inception_conv(in_chs, width(192), kernel_size=1),
            inception_conv(width(192), width(224), kernel_size=3, padding=1),
            inception_conv(width(224), width(256), kernel_size=3, stride=2),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)
        self.out_chs = width(384) + width(256) + in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class InceptionB(nn.Module):
    def __init__(self, in_chs: int, width: Width) -> None:
        super().__init__()
        self.branch0 = inception_conv(in_chs, width(384), kernel_size=1)
        self.branch1 = nn.Sequential(
            inception_conv(in_chs, width(192), kernel_size=1),
            inception_conv(width(192), width(224), kernel_size=(1, 7), padding=(0, 3)),
            inception_conv(width(224), width(256), kernel_size=(7, 1), padding=(3, 0)),
        )
        self.branch2 = nn.Sequential(
            inception_conv(in_chs, width(192), kernel_size=1),
            inception_conv(width(192), width(192), kernel_size=(7, 1), padding=(3, 0)),
            inception_conv(width(192), width(224), kernel_size=(1, 7), padding=(0, 3)),
            inception_conv(width(224), width(224), kernel_size=(7, 1), padding=(3, 0)),
            inception_conv(width(224), width(256), kernel_size=(1, 7), padding=(0, 3)),
        )
        self.branch3 = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
            inception_conv(in_chs, width(128), kernel_size=1),
        )
        self.out_chs = width(384) + 2 * width(256) + width(128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class ReductionB(nn.Module):
    def __init__(self, in_chs: int, width: Width) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(
            inception_conv(in_chs, width(192), kernel_size=1),
            inception_conv(width(192), width(192), kernel_size=3, stride=2),
        )
        self.branch1 = nn.Sequential(
            inception_conv(in_chs, width(256), kernel_size=1),
            inception_conv(width(256), width(256), kernel_size=(1, 7), padding=(0, 3)),
            inception_conv(width(256), width(320), kernel_size=(7, 1), padding=(3, 0)),
            inception_conv(width(320), width(320), kernel_size=3, stride=2),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)
        self.out_chs = width(192) + width(320) + in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class InceptionC(nn.Module):
    def __init__(self, in_chs: int, width: Width) -> None:
        super().__init__()
        self.branch0 = inception_conv(in_chs, width(256), kernel_size=1)

        self.branch1_0 = inception_conv(in_chs, width(384), kernel_size=1)
        self.branch1_1a = inception_conv(width(384), width(256), kernel_size=(1, 3), padding=(0, 1))
        self.branch1_1b = inception_conv(width(384), width(256), kernel_size=(3, 1), padding=(1, 0))

        self.branch2_0 = inception_conv(in_chs, width(384), kernel_size=1)
        self.branch2_1 = inception_conv(width(384), width(448), kernel_size=(3, 1), padding=(1, 0))
        self.branch2_2 = inception_conv(width(448), width(512), kernel_size=(1, 3), padding=(0, 1))
        self.branch2_3a = inception_conv(width(512), width(256), kernel_size=(1, 3), padding=(0, 1))
        self.branch2_3b = inception_conv(width(512), width(256), kernel_size=(3, 1), padding=(1, 0))

        self.branch3 = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
            inception_conv(in_chs, width(256), kernel_size=1),
        )
        self.out_chs = 6 * width(256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.branch1_0(x)
        x2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat(
            (
                self.branch0(x),
                self.branch1_1a(x1),
                self.branch1_1b(x1),
                self.branch2_3a(x2),
                self.branch2_3b(x2),
                self.branch3(x),
            ),
            1,
        )


STAGE_NAMES: dict[type[nn.Module], str] = {
    Mixed3a: "Mixed-3a",
    Mixed4a: "Mixed-4a",
    Mixed5a: "Mixed-5a",
    InceptionA: "Inception-A",
    ReductionA: "Reduction-A",
    InceptionB: "Inception-B",
    ReductionB: "Reduction-B",
    InceptionC: "Inception-C",
}


class InceptionV4(nn.Module):
    def __init__(self, repeats: tuple[int, int, int], width: Width, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        stem = [
            inception_conv(3, width(32), kernel_size=3, stride=2),
            inception_conv(width(32), width(32), kernel_size=3),
            inception_conv(width(32), width(64), kernel_size=3, padding=1),
        ]
        inception_a, inception_b, inception_c = repeats
        block_types = [
            Mixed3a,
            Mixed4a,
            Mixed5a,
            *[InceptionA] * inception_a,
            ReductionA,
            *[InceptionB] * inception_b,
            ReductionB,
            *[InceptionC] * inception_c,
        ]
        blocks, chs = [], cast(int, stem[-1].out_channels)
        for block_type in block_types:
            blocks.append(block_type(chs, width))
            chs = cast(int, blocks[-1].out_chs)
        self.features = nn.Sequential(*stem, *blocks)
        self.num_features = chs
        from timm.layers.classifier import create_classifier  # on building only: see models.spec.spec_types

        # Any drop_rate, even 0, makes create_classifier return timm's `head_drop` too.
        self.global_pool, self.head_drop, self.last_linear = create_classifier(chs, num_classes, drop_rate=0.0)

    def get_classifier(self) -> nn.Module:
        return cast(nn.Module, self.last_linear)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.features(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.last_linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_spec
@dataclass(frozen=True, kw_only=True)
class InceptionV4Spec(ArchSpec):
    family: ClassVar[str] = "inception_v4"
    exact_models: ClassVar[tuple[str, ...]] = ("inception_v4",)
    # Valid (unpadded) 3×3 convs and pools, five of them at stride 2: 75 px reach the head at
    # 1×1, 74 px end at 2×2 before Reduction-B's 3×3 kernels.
    min_input_size: ClassVar[int] = 75

    repeats: tuple[int, int, int] = (4, 7, 3)  # Inception-A, -B, -C blocks
    width_factor: float = 1.0  # of every conv, the stem included, relative to timm's widths
    rounding: Rounding = DEFAULT_ROUNDING

    def width(self, channels: int) -> int:
        return scale_width(channels, self.width_factor, self.rounding)

    def scaled(self, depth_factor: float, width_factor: float, rounding: Rounding) -> InceptionV4Spec:
        return self.replace(
            repeats=tuple(scale_depth(n, depth_factor, rounding) for n in self.repeats),
            width_factor=width_factor,
            rounding=rounding,
        )

    def build(self) -> InceptionV4:
        return InceptionV4(self.repeats, self.width, self.num_classes)

    def truncate(self, original: nn.Module) -> None:
        limits = dict(zip((InceptionA, InceptionB, InceptionC), self.repeats))
        seen: Counter[type] = Counter()
        kept = []
        for block in cast(nn.Sequential, original.features):
            seen[type(block)] += 1
            if seen[type(block)] <= limits.get(type(block), seen[type(block)]):
                kept.append(block)
        original.features = nn.Sequential(*kept)

    def stages(self) -> list[Stage]:
        # The blocks are where concatenated widths are summed: read them from a shapes-only build.
        with torch.device("meta"):
            features = self.build().features
        stem, blocks = features[:3], features[3:]
        rows = [Stage("stem", 1, ", ".join(str(conv.out_channels) for conv in stem))]
        for block_type, group in groupby(blocks, key=type):
            same_blocks = list(group)
            rows.append(Stage(STAGE_NAMES[block_type], len(same_blocks), str(same_blocks[-1].out_chs)))
        return rows
