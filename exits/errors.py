"""Exceptions of the exits package; each message is one line naming the culprit."""
from __future__ import annotations

__all__ = ["ExitsError", "UnknownModelError", "UnknownModuleError", "UnknownHeadError", "UnsupportedModelError"]


class ExitsError(ValueError):
    """Base of every user-facing problem in ``exits``."""


class UnknownModelError(ExitsError):
    """A model name that timm does not know."""


class UnknownModuleError(ExitsError):
    """A module name that the model does not have, or that is not a block boundary."""


class UnknownHeadError(ExitsError):
    """A head type that is not registered."""


class UnsupportedModelError(ExitsError):
    """A model class for which no segment plan is registered."""
