"""Early exits for timm vision models: exit heads on a frozen backbone (DyCE), savers (TinySaver),
per-unit MACs. Importing this package registers the built-in head types."""
from . import heads as _heads  # noqa: F401  (registers the built-in heads)
from ._registry import create_head, is_head, list_heads, register_head
from .errors import (
                     ExitsError,
                     InexactPlanError,
                     UnknownHeadError,
                     UnknownModelError,
                     UnknownModuleError,
                     UnsupportedModelError,
)
from .macs import measure_latency, unit_macs
from .model import ExitModel, ExitSpec, UnitSpec, attach_exits, create_backbone, head_key
from .points import ExitPoint, take_indices
from .runtime import ExitRuntime, RuntimeConfigError
from .segments import Segment, register_plan

__all__ = [
    "attach_exits", "ExitModel", "ExitSpec", "UnitSpec", "ExitPoint", "Segment", "create_backbone", "head_key",
    "create_head", "list_heads", "register_head", "is_head", "register_plan", "take_indices",
    "unit_macs", "measure_latency", "ExitRuntime", "RuntimeConfigError",
    "ExitsError", "UnknownHeadError", "UnknownModelError", "UnknownModuleError", "UnsupportedModelError",
    "InexactPlanError",
]
