"""Exceptions of the exits package; each message is one line naming the culprit."""
from __future__ import annotations

__all__ = ["ExitsError", "UnknownModelError", "UnknownModuleError", "UnknownHeadError", "UnsupportedModelError",
           "InexactPlanError"]


class ExitsError(ValueError):
    """Base of every user-facing problem in ``exits``."""


class UnknownModelError(ExitsError):
    """A model name that timm does not know."""


class UnknownModuleError(ExitsError):
    """A module name that the model does not have, or that is not a block boundary."""


class UnknownHeadError(ExitsError):
    """A head type that is not registered."""


class UnsupportedModelError(ExitsError):
    """A model that cannot be cut into segments (no blocks found, not traceable, an input it refuses)."""


class InexactPlanError(UnsupportedModelError):
    """A plan whose steps, run in order, do not reproduce the model's own forward bit for bit."""
