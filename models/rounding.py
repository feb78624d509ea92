"""How a scaled width, depth or input side becomes an integer.

`paper` is the NAR authors' rule (Python's round, half to even, floor of 1); `divisible8`
is a hardware-friendly alternative: channels to multiples of 8 as timm's make_divisible
does (never more than 10% below the scaled value), depth rounded up.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from nar_search.models.errors import ModelError

Rounding = Literal["paper", "divisible8"]
ROUNDING_MODES: tuple[str, ...] = get_args(Rounding)
DEFAULT_ROUNDING: Rounding = "paper"  # the authors' rule, so that reductions match the paper's

# Scaled values are products of floats: keep 2.0000000001 from rounding up to 3.
_EPS = 1e-9


def check_rounding(rounding: str) -> Rounding:
    if rounding not in ROUNDING_MODES:
        raise ModelError(f"unknown rounding mode {rounding!r}: use one of {', '.join(ROUNDING_MODES)}")
    return rounding  # type: ignore[return-value]


def scale_width(channels: int, factor: float, rounding: Rounding = DEFAULT_ROUNDING) -> int:
    if rounding == "paper":
        return max(1, round(channels * factor))
    from timm.layers.helpers import make_divisible  # here: importing rounding modes stays free of timm and torch

    return int(make_divisible(channels * factor, 8))  # type: ignore[no-untyped-call]  # timm leaves it unannotated


def scale_depth(blocks: int, factor: float, rounding: Rounding = DEFAULT_ROUNDING) -> int:
    if rounding == "paper":
        return max(1, round(blocks * factor))
    return max(1, math.ceil(blocks * factor - _EPS))


def scale_side(side: int, factor: float) -> int:
    return max(1, round(side * factor))
