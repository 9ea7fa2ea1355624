"""Reference points for a front: every exit on its own, and the oracle bound no configuration reaches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SplitStats", "split_stats", "standalone_table", "oracle_bound"]


@dataclass
class SplitStats:
    """What a split gives whatever the configuration, summed chunk by chunk (:meth:`add`): right answers
    per exit, and the oracle's right answers and summed cost."""

    n_samples: int
    exit_correct: np.ndarray  # (n_exits,) samples each exit gets right
    oracle_correct: int = 0  # samples some exit gets right
    oracle_cost: float = (
        0.0  # summed cost of leaving at the cheapest right exit (else the final one)
    )

    @classmethod
    def empty(cls, n_exits: int) -> SplitStats:
        return cls(0, np.zeros(n_exits, dtype=np.int64))

    def add(self, correct: np.ndarray, costs) -> None:
        """Account for the correctness ``(n_exits, c)`` of ``c`` more samples under ``costs`` (a CostTable)."""
        alone = _standalone_costs(costs, correct.shape[0])
        cost = np.full(correct.shape[1], alone[-1])  # nobody right: the final exit's cost
        unresolved = np.ones(correct.shape[1], dtype=bool)
        for e in np.argsort(alone, kind="stable"):  # cheapest exit first
            hit = unresolved & correct[e]
            cost[hit] = alone[e]
            unresolved &= ~hit
        self.n_samples += correct.shape[1]
        self.exit_correct += np.count_nonzero(correct, axis=1)
        self.oracle_correct += correct.shape[1] - int(np.count_nonzero(unresolved))
        self.oracle_cost += float(cost.sum())


def _standalone_costs(costs, n_exits: int) -> np.ndarray:
    """Cost ``(n_exits,)`` of leaving at each exit when it is the only enabled early exit."""
    return np.array([costs.standalone_cost(e) for e in range(n_exits)])


def split_stats(problem) -> SplitStats:
    """The stats of an :class:`ExitProblem` (from its arrays) or of a ``SplitEvaluator`` (streamed)."""
    stats = getattr(problem, "stats", None)
    if stats is None:
        stats = SplitStats.empty(problem.n_exits)
        stats.add(problem.correct, problem.costs)
    return stats


def standalone_table(problem) -> list[dict]:
    """One row per exit (execution order, final last): what it achieves if every sample left there.

    Each row: ``name``, ``position``, ``head``, ``accuracy`` (top-1 on the problem's split) and
    ``relative_cost`` (``CostTable.standalone_cost / base_cost``).
    """
    stats = split_stats(problem)
    costs = _standalone_costs(problem.costs, len(problem.cache.exits)) / problem.costs.base_cost
    return [
        {
            "name": info.name,
            "position": info.position,
            "head": info.head,
            "accuracy": float(stats.exit_correct[e]) / stats.n_samples,
            "relative_cost": float(costs[e]),
        }
        for e, info in enumerate(problem.cache.exits)
    ]


def oracle_bound(problem) -> tuple[float, float]:
    """``(accuracy, relative_cost)`` of an oracle that knows which exits are right for each sample.

    Every sample leaves at the exit with the smallest standalone cost among those correct for it
    (any exit, as if run alone); a sample no exit gets right pays the final exit's cost and counts as
    wrong. An unreachable ceiling: real configurations pay for every head they pass.
    """
    stats = split_stats(problem)
    return (
        stats.oracle_correct / stats.n_samples,
        stats.oracle_cost / stats.n_samples / problem.costs.base_cost,
    )
