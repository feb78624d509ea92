"""Study files written before each method had its settings (`search.space: paper | grid | bayes
| ir` with flat `phi_values`, `alpha_values`, `flops_target_values` …) read as they meant:
a study made with one resumes with the same space."""

from __future__ import annotations

from typing import Any

EARLIER_KEYS = frozenset(
    {
        "space",
        "phi_values",
        "alpha_values",
        "beta_values",
        "gamma_values",
        "alpha",
        "beta",
        "tolerance",
        "rounding",
        "flops_target_values",
        "resrep_mask_interval",
        "resrep_warmup_epochs",
        "resrep_max_new",
    }
)
# The defaults those files were written against.
_EARLIER_DEFAULTS: dict[str, Any] = {
    "space": "paper",
    "phi_values": [0, 1, 2, 3],
    "phi": {"low": 0, "high": 3},
    "alpha_values": [1.1, 1.2, 1.3],
    "beta_values": [1.05, 1.1, 1.15],
    "gamma_values": [1.1, 1.15, 1.2],
    "alpha": {"low": 1.0, "high": 1.6},
    "beta": {"low": 1.0, "high": 1.3},
    "flops_target_values": [0.75, 0.5, 0.3],
}


def upgrade_search_space(search: dict[str, Any]) -> dict[str, Any]:
    """`search` in today's form (`phi` and `methods: {name: settings}`); unchanged when it is already."""
    if not EARLIER_KEYS & search.keys():
        return search
    earlier = _EARLIER_DEFAULTS | search
    space = earlier["space"]
    nar: dict[str, Any] = {key: earlier[key] for key in ("tolerance", "rounding") if key in search}
    if space == "grid":
        nar |= {name: earlier[f"{name}_values"] for name in ("alpha", "beta", "gamma")}
    if space == "bayes":
        nar |= {name: earlier[name] for name in ("alpha", "beta")}
    resrep = {"flops_target": earlier["flops_target_values"]}
    resrep |= {key.removeprefix("resrep_"): value for key, value in search.items() if key.startswith("resrep_")}
    settings = {"nar": nar, "resrep": resrep}
    names = ["ir"] if space == "ir" else earlier.get("methods", ["nar"])
    unknown = {key: value for key, value in search.items() if key not in EARLIER_KEYS | {"phi", "methods"}}  # refused as they were
    return {
        **unknown,
        "phi": earlier["phi"] if space == "bayes" else earlier["phi_values"],
        "methods": {name: settings.get(name, {}) for name in names},
    }
