"""Reference points for a front: every exit on its own, and the oracle bound no configuration reaches."""
from __future__ import annotations

import numpy as np

__all__ = ["standalone_table", "oracle_bound"]


def _standalone_costs(problem) -> np.ndarray:
    """Cost ``(n_exits,)`` of leaving at each exit when it is the only enabled early exit."""
    return np.array([problem.costs.standalone_cost(e) for e in range(problem.n_exits)])


def standalone_table(problem) -> list[dict]:
    """One row per exit (execution order, final last): what it achieves if every sample left there.

    Each row: ``name``, ``position``, ``head``, ``accuracy`` (top-1 on the problem's split) and
    ``relative_cost`` (``CostModel.standalone_cost / base_cost``).
    """
    costs = _standalone_costs(problem) / problem.costs.base_cost
    return [{"name": info.name, "position": info.position, "head": info.head,
             "accuracy": float(np.count_nonzero(problem.correct[e])) / problem.n_samples,
             "relative_cost": float(costs[e])}
            for e, info in enumerate(problem.cache.exits)]


def oracle_bound(problem) -> tuple[float, float]:
    """``(accuracy, relative_cost)`` of an oracle that knows which exits are right for each sample.

    Every sample leaves at the exit with the smallest standalone cost among those correct for it
    (any exit, as if run alone); a sample no exit gets right pays the final exit's cost and counts as
    wrong. An unreachable ceiling: real configurations pay for every head they pass.
    """
    costs = _standalone_costs(problem)
    order = np.argsort(costs, kind="stable")
    correct = problem.correct[order]                      # (n_exits, n_samples), cheapest exit first
    any_correct = correct.any(axis=0)
    first = np.argmax(correct, axis=0)                    # first correct exit in cost order
    per_sample = np.where(any_correct, costs[order][first], costs[problem.final_exit])
    return (float(np.count_nonzero(any_correct)) / problem.n_samples,
            float(per_sample.mean()) / problem.costs.base_cost)
