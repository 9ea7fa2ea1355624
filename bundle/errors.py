"""The one exception of the bundle package; every message is one line naming the culprit."""

from __future__ import annotations

__all__ = ["BundleError"]


class BundleError(ValueError):
    """A bundle that cannot be used (missing or altered manifest or graph, unknown configuration or exit),
    or an input that does not fit it (wrong shape, channel count or type)."""
