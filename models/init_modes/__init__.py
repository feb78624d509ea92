"""Init modes by name, complete on import: `scratch` and `inherit`. A new mode is one file
here, imported below."""

from nar_search.models.init_modes import inherit, scratch  # noqa: F401
from nar_search.models.init_modes.base import INIT_MODES, InitMode, get_init_mode, register_init_mode

__all__ = ["INIT_MODES", "InitMode", "get_init_mode", "register_init_mode"]
