"""Network Auto-Reduction: compound scaling *down* of depth, width and input resolution.

depth × α^-ϕ, width × β^-ϕ, input side × γ^-ϕ, with α·β²·γ² ≈ 2 so cost falls ~2^ϕ.
Input reduction (IR) is the same engine with depth and width left alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nar_search.models.errors import ModelError
from nar_search.models.rounding import DEFAULT_ROUNDING, Rounding, check_rounding, scale_side
from nar_search.models.spec import ArchSpec, Reduction

PAPER_COEFFICIENTS = (1.2, 1.1, 1.15)
# The paper's own coefficients give α·β²·γ² = 1.92, 4% below 2: the default must admit them.
DEFAULT_TOLERANCE = 0.05


@dataclass(frozen=True)
class NARCoefficients:
    alpha: float = PAPER_COEFFICIENTS[0]
    beta: float = PAPER_COEFFICIENTS[1]
    gamma: float = PAPER_COEFFICIENTS[2]
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 1:
                raise ModelError(f"{name} = {value} must be ≥ 1: NAR scales a network down, never up")
        if abs(self.cost_base - 2) > self.tolerance * 2:
            raise ModelError(
                f"α·β²·γ² = {self.cost_base:.3f} is not within {self.tolerance:.0%} of 2 "
                f"(α={self.alpha}, β={self.beta}, γ={self.gamma}): choose coefficients whose product "
                "is about 2, e.g. the paper's 1.2, 1.1, 1.15, or widen the tolerance"
            )

    @property
    def cost_base(self) -> float:
        """α·β²·γ²: the factor by which cost falls per unit of ϕ."""
        return self.product(self.alpha, self.beta, self.gamma)

    @staticmethod
    def product(alpha: float, beta: float, gamma: float) -> float:
        return alpha * beta**2 * gamma**2

    def factors(self, phi: float) -> tuple[float, float, float]:
        """(depth, width, resolution) multipliers at ϕ."""
        check_phi(phi)
        return self.alpha**-phi, self.beta**-phi, self.gamma**-phi


def check_phi(phi: float) -> None:
    if not math.isfinite(phi) or phi < 0:
        raise ModelError(f"ϕ = {phi} must be ≥ 0 (ϕ = 0 is the original network)")


def nar_reduce(
    original: ArchSpec,
    phi: float,
    coefficients: NARCoefficients = NARCoefficients(),
    rounding: Rounding = DEFAULT_ROUNDING,
) -> ArchSpec:
    depth, width, resolution = coefficients.factors(phi)
    record = Reduction(
        method="nar",
        alpha=coefficients.alpha,
        beta=coefficients.beta,
        gamma=coefficients.gamma,
        phi=phi,
        depth_factor=depth,
        width_factor=width,
        resolution_factor=resolution,
        rounding=check_rounding(rounding),
    )
    return _apply(original, record)


def input_reduce(original: ArchSpec, phi: float, gamma: float = PAPER_COEFFICIENTS[2]) -> ArchSpec:
    """The IR baseline: only the input side shrinks, by γ^-ϕ; the network is unchanged."""
    check_phi(phi)
    if gamma < 1:
        raise ModelError(f"gamma = {gamma} must be ≥ 1: input reduction never enlarges the input")
    record = Reduction(method="ir", gamma=gamma, phi=phi, resolution_factor=gamma**-phi)
    return _apply(original, record)


def _apply(original: ArchSpec, record: Reduction) -> ArchSpec:
    if original.reduction.method != "none":
        raise ModelError(f"{original.model_name} is already reduced ({original.reduction.method}): reduce the original spec")
    side = scale_side(original.input_size, record.resolution_factor)
    if side < original.min_input_size:
        raise ModelError(
            f"input side {original.input_size} × {record.resolution_factor:.3f} = {side} px is below "
            f"{original.model_name}'s minimum of {original.min_input_size} px: use a smaller ϕ or γ, "
            "or a larger base --input-size"
        )
    scaled = original.scaled(record.depth_factor, record.width_factor, record.rounding)
    return scaled.replace(input_size=side, reduction=record)
