"""Reduction methods, one module each, registered by name in `METHODS` as they are imported.

A new method is one module (its `MethodSettings` and its `@register`ed `ReductionMethod`)
and one import line here.
"""

# Importing a method registers it; this order is the order --method's help lists them in,
# hence not sorted.
# isort: off
from nar_search.search.methods import nar  # noqa: F401
from nar_search.search.methods import ir  # noqa: F401
from nar_search.search.methods import resrep  # noqa: F401

# isort: on
from nar_search.search.methods.base import (
    METHODS,
    Candidate,
    ReductionMethod,
    TrainingHooks,
    get_method,
    method_help,
    register,
)
from nar_search.search.methods.settings import Dimension, MethodSettings, Range

__all__ = [
    "METHODS",
    "Candidate",
    "Dimension",
    "MethodSettings",
    "Range",
    "ReductionMethod",
    "TrainingHooks",
    "get_method",
    "method_help",
    "register",
]
