"""NAR's derived-γ space drawn so that every draw is a network: ϕ first, then α and β as
fractions of the intervals that ϕ (and α) leave feasible, γ from α·β²·γ² = 2.

With P = α·β²: γ ≥ 1 ⟺ P ≤ 2, and an input side S·γ^-ϕ ≥ m (the family's minimum)
⟺ γ ≤ (S/m)^(1/ϕ) ⟺ P ≥ 2·(m/S)^(2/ϕ). The sampler sees the unit square of the two fractions
at every ϕ, a smooth space with no infeasible corner, instead of a box that is partly void.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nar_search.search.methods.settings import Range


@dataclass(frozen=True)
class FeasibleCoefficients:
    alpha: Range
    beta: Range
    min_side_ratio: float  # m/S: the family's minimum input side over the original's

    def product_bounds(self, phi: float) -> tuple[float, float]:
        """The α·β² that keep γ ≥ 1 and the input side at least the minimum at `phi`."""
        low = 0.0 if phi == 0 else 2 * self.min_side_ratio ** (2 / phi)
        return low, 2.0

    def alpha_interval(self, phi: float) -> tuple[float, float]:
        low, high = self.product_bounds(phi)
        return max(self.alpha.low, low / self.beta.high**2), min(self.alpha.high, high / self.beta.low**2)

    def beta_interval(self, phi: float, alpha: float) -> tuple[float, float]:
        low, high = self.product_bounds(phi)
        return max(self.beta.low, math.sqrt(low / alpha)), min(self.beta.high, math.sqrt(high / alpha))

    def draw(self, phi: float, alpha_fraction: float, beta_fraction: float) -> tuple[float, float, float]:
        """(α, β, γ) at these fractions of the feasible intervals. When `phi` leaves none (the
        ranges reach no α·β² in the bounds), the ranges' far corner: the caller measures it as
        infeasible."""
        alpha_low, alpha_high = self.alpha_interval(phi)
        if alpha_low > alpha_high:
            return self.alpha.high, self.beta.high, _gamma(self.alpha.high, self.beta.high)
        alpha = alpha_low + alpha_fraction * (alpha_high - alpha_low)
        beta_low, beta_high = self.beta_interval(phi, alpha)
        beta = beta_low + beta_fraction * max(0.0, beta_high - beta_low)
        return alpha, beta, _gamma(alpha, beta)

    def fractions(self, phi: float, alpha: float, beta: float) -> tuple[float, float]:
        """The fractions that draw (α, β) at `phi`, or the nearest feasible point's."""
        alpha_low, alpha_high = self.alpha_interval(phi)
        alpha_fraction = _fraction(alpha, alpha_low, alpha_high)
        beta_low, beta_high = self.beta_interval(phi, alpha_low + alpha_fraction * (alpha_high - alpha_low))
        return alpha_fraction, _fraction(beta, beta_low, beta_high)


def _gamma(alpha: float, beta: float) -> float:
    gamma = math.sqrt(2 / (alpha * beta**2))
    return 1.0 if 1 - 1e-9 < gamma < 1 else gamma  # on the bound α·β² = 2, rounding may leave γ a hair below 1


def _fraction(value: float, low: float, high: float) -> float:
    return 0.0 if high <= low else min(1.0, max(0.0, (value - low) / (high - low)))
