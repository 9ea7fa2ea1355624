"""The one exception of the contract package; every message is one line naming the culprit."""

from __future__ import annotations

__all__ = ["ContractError"]


class ContractError(ValueError):
    """A rule, configuration or parameter that this version cannot use (unknown name, wrong type, out of range).

    Each side re-raises it as its own error (``SearchError``, ``RuntimeConfigError``, ``BundleError``) with the
    same one-line message."""
