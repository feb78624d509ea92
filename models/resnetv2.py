"""ResNet V2 (pre-activation, bottleneck) with free stage depths and exact widths, built
with timm's own ResNetV2 so names, init and state dicts stay timm's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, cast
from unittest import mock

from torch import nn

from nar_search.models.rounding import Rounding, scale_depth, scale_width
from nar_search.models.spec import ArchSpec, Stage, register_spec

BOTTLENECK_EXPANSION = 4


@contextmanager
def _exact_widths() -> Iterator[None]:
    # timm's ResNetV2 rounds every width to a multiple of 8; the paper's widths (58, 233, …)
    # are exact, and the divisible8 mode has already rounded. So widths pass through as given.
    # timm (1.x) has no option for that, hence the patch of its module's make_divisible;
    # tests/test_families.py::test_reduced_resnetv2_has_the_specs_exact_widths pins it.
    with mock.patch("timm.models.resnetv2.make_divisible", lambda v, *args, **kwargs: round(v)):
        yield


@register_spec
@dataclass(frozen=True, kw_only=True)
class ResNetV2Spec(ArchSpec):
    family: ClassVar[str] = "resnetv2"
    exact_models: ClassVar[tuple[str, ...]] = ("resnetv2_50",)

    depths: tuple[int, ...] = (3, 4, 6, 3)
    mid_widths: tuple[int, ...] = (64, 128, 256, 512)
    stem_width: int = 64

    @property
    def out_widths(self) -> tuple[int, ...]:
        # The expansion follows the rounded mid width: 4 × 233 = 932, as the authors did.
        return tuple(BOTTLENECK_EXPANSION * w for w in self.mid_widths)

    def scaled(self, depth_factor: float, width_factor: float, rounding: Rounding) -> ResNetV2Spec:
        return self.replace(
            depths=tuple(scale_depth(d, depth_factor, rounding) for d in self.depths),
            mid_widths=tuple(scale_width(w, width_factor, rounding) for w in self.mid_widths),
            stem_width=scale_width(self.stem_width, width_factor, rounding),
        )

    def build(self) -> nn.Module:
        import timm  # on building only: see models.spec.spec_types

        with _exact_widths():
            return timm.create_model(
                self.model_name,
                pretrained=False,
                num_classes=self.num_classes,
                layers=list(self.depths),
                channels=self.out_widths,
                stem_chs=self.stem_width,
            )

    def truncate(self, original: nn.Module) -> None:
        for stage, depth in zip(cast(nn.Sequential, original.stages), self.depths):
            stage.blocks = cast(nn.Sequential, stage.blocks)[:depth]

    def stages(self) -> list[Stage]:
        rows = [Stage("stem", 1, str(self.stem_width))]
        # As the paper's table: the bottleneck mid width (the output is 4 × it).
        for index, (depth, mid) in enumerate(zip(self.depths, self.mid_widths), start=1):
            rows.append(Stage(f"stage {index}", depth, str(mid)))
        return rows
