"""Compute-unit accounting: the cost of leaving at an exit, each unit counted once.

A sample leaving at enabled exit e pays every unit that the enabled exits up to and including e
need (backbone segments, heads, savers), each once. What a unit costs is a registered cost model's
(``contract/costs/``: ``macs``, ``latency``, ``units``); :func:`cost_table` builds a cache's table under
one and makes the cache's own cost check on it.
"""

from __future__ import annotations

from collections.abc import Sequence

from contract import partner_exit, reads_partner
from contract.costs import CostModelError, CostTable, get_cost_model, list_cost_models
from data_cache.schema import cost_problems

from ._validation import SearchError

__all__ = ["CostTable", "cost_table", "list_cost_models", "partners_of", "paired_costs"]


def cost_table(
    cache,
    objective: str = "macs",
    *,
    table: str | None = None,
    batch_size: int | None = None,
    rebatch: bool = False,
) -> CostTable:
    """The cost table of ``cache`` under the cost model ``objective``; SearchError in one line when the model
    is unknown or the cache's unit table cannot be charged. ``objective="time"`` reads the measured table
    ``table`` beside the cache, at ``batch_size`` (the table's own when None), for compaction or, ``rebatch``,
    re-batched serving: ``search.time_objective``."""
    if objective == "time":
        from .time_objective import load_time_costs

        return load_time_costs(cache, table, batch_size, rebatch=rebatch)
    try:
        model = get_cost_model(objective)
        costs = model.table(cache.units, cache.exits)
    except CostModelError as exc:
        raise SearchError(str(exc)) from None
    n_max = max((cache.n_samples(s) for s in cache.splits()), default=1)
    problems = cost_problems(
        model.quantity,
        dict(zip(costs.unit_names, costs.unit_costs.tolist(), strict=True)),
        cache.exits[-1].units,
        n_max,
    )  # the very check the cache's schema makes
    if problems:
        raise SearchError(problems[0])
    return costs


def partners_of(cache, exits: Sequence[int], rules: Sequence[str]) -> dict[int, int]:
    """Each of ``exits`` (execution order) whose rule in ``rules`` reads its partner, mapped to that partner
    (:func:`contract.rules.partner_exit` of the cache's exits); an exit without one is left out (it never decides)."""
    out = {}
    for e, r in zip(exits, rules, strict=True):
        if reads_partner(r) and (p := partner_exit(cache.exits, e)) is not None:
            out[int(e)] = p
    return out


def paired_costs(costs: CostTable, cache, exits: Sequence[int], rules: Sequence[str]) -> CostTable:
    """``costs`` with each of ``exits`` whose rule reads its partner also paying the partner's head
    (:meth:`contract.costs.CostTable.paired`): the table a configuration deciding with ``rules`` is charged by."""
    return costs.paired(partners_of(cache, exits, rules))
