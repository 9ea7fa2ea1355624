"""``ExitConfig``: which early exits are enabled, with which thresholds and exit rule.

The type is the contract's (:class:`contract.config.ExitConfig`), shared with ``exits.ExitRuntime`` and the
bundle router; the search builds configurations from its problem and resolves a file's against the cache
(``ExitConfig.from_json(entries, cache)``, ``config.check(cache)``: :class:`contract.ContractError` on a
problem, which the search's entry points report as :class:`~search.SearchError`).
"""

from __future__ import annotations

from contract.config import ExitConfig

__all__ = ["ExitConfig"]
