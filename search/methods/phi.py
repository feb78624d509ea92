"""What the methods walked by ϕ share (NAR and IR): ϕ's suggestion and grid, the ϕ = 0
baseline, ϕ in names and trial attributes, and ϕ as `nar train` and `nar reduce` read it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nar_search.models.errors import ModelError
from nar_search.search.methods.base import Candidate, ReductionMethod, S
from nar_search.search.methods.settings import Dimension, choices, suggest_value

if TYPE_CHECKING:
    import optuna


class PhiMethod(ReductionMethod[S]):
    """A method whose network follows from ϕ before training: sides × a coefficient^-ϕ."""

    def grid(self, phi: Dimension, settings: S) -> dict[str, list[Any]]:
        # ϕ = 0 is the enqueued baseline, which the GridSampler does not count as visited.
        return {"phi": [v for v in choices(phi) if v > 0] or [0.0]}

    def baseline_params(self, phi: Dimension, settings: S) -> dict[str, Any]:
        return {"phi": 0.0}

    def describe(self, candidate: Candidate[S]) -> dict[str, float]:
        return {"phi": candidate.spec.reduction.phi}

    def label(self, candidate: Candidate[S]) -> str:
        return f"{self.name} ϕ{candidate.spec.reduction.phi:.3g}"

    def slug(self, candidate: Candidate[S]) -> str:
        return f"{self.name}-phi{candidate.spec.reduction.phi:g}"


def suggest_phi(trial: optuna.trial.BaseTrial, phi: Dimension) -> float:
    return suggest_value(trial, "phi", phi)


def parse_phis(text: str) -> list[float]:
    """'2' → [2]; '0:5' → [0..5] step 1; '0:3:0.5' → step 0.5; '0,1.5,3' → a list."""
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop, step = parts if len(parts) == 3 else (*parts, 1.0)
            if step <= 0 or stop < start:
                raise ValueError
            count = round((stop - start) / step) + 1
            return [round(start + i * step, 10) for i in range(count)]
        return [float(p) for p in text.split(",")]
    except ValueError:
        raise ModelError(f"--phi {text!r} is not a ϕ value, a list (0,1.5,3) or a range (0:5 or 0:3:0.5)") from None
