"""Cost model ``time``: predicted wall-clock milliseconds per sample on one profiled target, under compaction.

A batch of B samples runs each unit on the rows of the batch that reach it, so a unit's time per sample depends
on how many others reach it: the cost is additive over a sample's own path only at B = 1. The model is bound
at lookup to an estimator built from a measured table (``get_cost_model("time", estimator=...)``; the search's
is ``search.time_cost.TimeCostModel``, from ``python -m exits.profile``); unbound (``get_cost_model("time")``)
it names the objective for consumers that only read an export's ``objective``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._base import CostModel, CostModelError, CostTable, register_cost_model

__all__ = ["Time"]


@register_cost_model
class Time(CostModel):
    """Milliseconds per sample predicted from a measured table at its batch size (``additive`` only at B = 1).

    ``estimator``: an object with ``cost_table(units, exits) -> CostTable`` (whose ``mean_cost_of`` is the
    exact prediction) and ``time_per_sample(enabled, leave)`` (seconds); None: unbound, no costs."""

    name = "time"
    quantity = "ms per sample"
    additive = False

    def __init__(self, estimator: Any = None):
        self.estimator = estimator

    def _bound(self) -> Any:
        if self.estimator is None:
            raise CostModelError(
                "objective 'time' needs a measured cost table: --cost-table NAME "
                "(python -m exits.profile writes CACHE/cost_tables/NAME.json)"
            )
        return self.estimator

    def unit_costs(self, units: Sequence[Any]) -> np.ndarray:
        """The additive surrogate's per-unit milliseconds (exact at B = 1; :meth:`table` adds the steps)."""
        table = self._bound().cost_table(units, [])
        return np.asarray(table.unit_costs[: len(units)], dtype=np.float64)

    def table(self, units: Sequence[Any], exits: Sequence[Any]) -> CostTable:
        return self._bound().cost_table(units, exits)

    def mean_cost(self, table: CostTable, enabled: Sequence[int], where: np.ndarray) -> float:
        return 1e3 * float(self._bound().time_per_sample(list(enabled), np.asarray(where)))
