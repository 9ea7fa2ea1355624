"""Compute-unit accounting: the cost of leaving at an exit, each unit counted once.

A sample leaving at enabled exit e pays every unit that the enabled exits up to and including e
need (backbone segments, heads, savers), each once (``exit-semantics-and-config.md``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_cache.schema import cost_problems

from ._validation import SearchError

__all__ = ["CostModel", "OBJECTIVES"]

OBJECTIVES = ("macs", "latency")


@dataclass(frozen=True)
class CostModel:
    """``unit_costs`` ``(n_units,)``; ``needs`` ``(n_exits, n_units)`` bool; the last exit is final."""

    unit_costs: np.ndarray
    needs: np.ndarray
    unit_names: tuple[str, ...]
    objective: str = "macs"

    @classmethod
    def from_cache(cls, cache, objective: str = "macs") -> "CostModel":
        if objective not in OBJECTIVES:
            raise SearchError(f"unknown objective {objective!r}; choose one of {list(OBJECTIVES)}")
        names = tuple(u.name for u in cache.units)
        if objective == "latency":
            missing = [u.name for u in cache.units if u.latency_s is None]
            if missing:
                raise SearchError(f"objective 'latency' needs measured latency for every unit; this cache has none "
                                  f"for {missing[:3]}{'...' if len(missing) > 3 else ''}; dump with --latency or use macs")
            costs = np.array([u.latency_s for u in cache.units], dtype=np.float64)
        else:
            costs = np.array([u.macs for u in cache.units], dtype=np.float64)
        col = {n: i for i, n in enumerate(names)}
        needs = np.zeros((len(cache.exits), len(names)), dtype=bool)
        for i, e in enumerate(cache.exits):
            needs[i, [col[u] for u in e.units]] = True
        n_max = max((cache.n_samples(s) for s in cache.splits()), default=1)
        problems = cost_problems("MACs" if objective == "macs" else "latency_s", dict(zip(names, costs.tolist())),
                                 cache.exits[-1].units, n_max)  # the very check the cache's schema makes
        if problems:
            raise SearchError(problems[0])
        return cls(costs, needs, names, objective)

    @property
    def final_exit(self) -> int:
        return self.needs.shape[0] - 1

    @property
    def base_cost(self) -> float:
        """Cost of the final exit with no early exit enabled."""
        return float(self.unit_costs[self.needs[-1]].sum())

    def exit_costs(self, enabled) -> np.ndarray:
        """Cost of leaving at each of ``enabled`` (exit indices, execution order) and then at the final exit."""
        path = list(enabled) + [self.final_exit]
        used = np.logical_or.accumulate(self.needs[path], axis=0)
        return used @ self.unit_costs

    def standalone_cost(self, exit_index: int) -> float:
        """Cost of leaving at ``exit_index`` when it is the only enabled early exit."""
        return float(self.unit_costs[self.needs[exit_index]].sum())
