"""The time objective of a search: a measured cost table as a cost table the search engines can use.

:class:`TimeCostTable` is a ``contract.costs.CostTable`` in **milliseconds per sample** whose columns are the
table's timed items (units or bundle graphs, a step per early exit, the final exit's scoring, the collection of
results, which every sample pays) and whose ``exit_costs`` are the additive surrogate: each item costs ``T_i(B) /
B``, what it costs per row in a full batch. At B = 1, and re-batched at any B (every item runs full batches), that
is the time model itself (``additive``); at B > 1 under compaction it ignores that compacted batches run fewer rows
less efficiently, so :meth:`TimeCostTable.mean_cost_of` gives the exact prediction (the binomial expectation of
``search.time_cost``, from the counts of samples leaving at each enabled exit) and every evaluation path calls it:
``ExitProblem``, ``SplitEvaluator``, the engines' results (``BaseEngine.run`` re-scores a front an engine scored on
the surrogate). Relative costs are against the base model's measured time (``base_cost``). numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract.costs import CostModelError, CostTable, get_cost_model
from data_cache.cost_tables import UNIT_ITEM_KINDS, CostTableError, TimeTable, interpolate

from ._validation import SearchError

__all__ = ["TimeCostTable", "time_cost_table", "time_table_record"]


@dataclass(frozen=True)
class TimeCostTable(CostTable):
    """The surrogate's per-item ms (``unit_costs``, columns ``unit_names``), the exact model (``model``, a
    ``search.time_cost.TimeCostModel``), the base model's ms per sample (``base_ms``) and the exits that run their
    partner's head (``paired_exits``: :meth:`paired`)."""

    model: Any = None
    base_ms: float = 1.0
    paired_exits: frozenset[int] = frozenset()
    _reach: dict = field(default_factory=dict, compare=False, repr=False)
    _times: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def additive(self) -> bool:
        return bool(self.model.additive)

    @property
    def base_cost(self) -> float:
        return self.base_ms

    @property
    def batch_size(self) -> int:
        return int(self.model.batch_size)

    def paired(self, partners: Mapping[int, int]) -> CostTable:
        """This table with each exit of ``partners`` also running its partner's head for the rows reaching it: in the
        surrogate, the partner's unit items (not its step: the partner does not decide); in the exact model, its
        reach (``TimeCostModel._reach``)."""
        if not partners:
            return self
        units = {it.name for it in self.model.table.of_kind(*UNIT_ITEM_KINDS)}
        unit_cols = np.array([name in units for name in self.unit_names])
        needs = self.needs.copy()
        for e, p in partners.items():
            needs[e] |= self.needs[p] & unit_cols
        return dataclasses.replace(
            self, needs=needs, paired_exits=self.paired_exits | frozenset(partners)
        )  # the reach cache is shared: its keys name the paired exits

    def mean_cost_of(self, enabled: Sequence[int], counts: np.ndarray) -> float:
        """Predicted ms per sample (binomial expectation) of the configuration enabling ``enabled`` whose samples
        leave at each of them, then at the final exit, ``counts`` times."""
        counts = np.asarray(counts, dtype=np.float64)
        R, T = self._reach_of(tuple(int(e) for e in enabled))
        p = (R @ counts) / max(counts.sum(), 1.0)
        return float(self._expected(p, T).sum() + T_collect(self)) / self.batch_size

    def _expected(self, p: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Each item's expected ms per batch: ``T`` (n_items, B + 1) on ``N_i ~ Binomial(B, p_i)`` rows, or, re-batched,
        ``p_i`` of a full batch's."""
        if self.model.rebatch:
            return p * T[:, self.batch_size]
        return _expected_each(p, T, self.batch_size)

    def sample_costs(self, enabled: Sequence[int], leave: np.ndarray) -> np.ndarray:
        """Per-sample ms whose mean is :meth:`mean_cost_of` on these samples: each item's expected time spread
        over the rows that reach it (the linearisation at this configuration's reach; exact mean, not a law)."""
        path = np.array([*enabled, self.final_exit])
        lookup = np.full(self.needs.shape[0], -1)
        lookup[path] = np.arange(len(path))
        groups = lookup[np.asarray(leave)]
        counts = np.bincount(groups, minlength=len(path)).astype(np.float64)
        R, T = self._reach_of(tuple(int(e) for e in enabled))
        reached = R @ counts
        expected = self._expected(reached / max(counts.sum(), 1.0), T)
        per_row = np.divide(expected, reached, out=np.zeros_like(expected), where=reached > 0)
        per_group = (per_row @ R) * len(leave) / self.batch_size
        return per_group[groups] + T_collect(self) / self.batch_size

    def _reach_of(self, enabled: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``R`` (n_items, n_groups) float: which groups (enabled exits, then final) run each item, and ``T``
        (n_items, B + 1): each item's ms on 0..B rows; ``R`` and the items cached per set of enabled exits, every
        item's times once (the same whatever the set)."""
        paired = tuple(e for e in enabled if e in self.paired_exits)
        got = self._reach.get((enabled, paired))
        if got is None:
            if len(self._reach) > 4096:
                self._reach.clear()
            try:
                pairs = self.model._reach(list(enabled), paired)
            except SearchError as exc:
                raise SearchError(str(exc)) from None
            R = np.array([r for _, r in pairs], dtype=np.float64).reshape(len(pairs), -1)
            got = self._reach[(enabled, paired)] = (R, tuple(it.name for it, _ in pairs))
        R, names = got
        return R, self._item_ms(names)

    def _item_ms(self, names: tuple[str, ...]) -> np.ndarray:
        """``(len(names), B + 1)``: the named items' ms on 0..B rows, each computed once."""
        k = np.arange(self.batch_size + 1)
        for name in names:
            if name not in self._times:
                self._times[name] = 1e3 * self.model._time(self.model.table.item(name), k)
        return np.array([self._times[name] for name in names]).reshape(len(names), -1)


def T_collect(table: TimeCostTable) -> float:
    """ms per batch of putting results back in input order (0 when the table has no such item)."""
    collect = table.model.table.of_kind("collect")
    return (
        1e3 * float(table.model._time(collect[0], np.array([table.batch_size]))[0])
        if collect
        else 0.0
    )


def _log_comb(B: int) -> np.ndarray:
    k = np.arange(B + 1)
    lg = np.array([math.lgamma(v + 1) for v in range(B + 1)])
    return lg[B] - lg[k] - lg[B - k]


def _expected_each(p: np.ndarray, T: np.ndarray, B: int) -> np.ndarray:
    """E[T_i(N_i)] per item for N_i ~ Binomial(B, p_i): ``p`` (n_items,), ``T`` (n_items, B + 1)."""
    k = np.arange(B + 1)
    inner = (p > 0) & (p < 1)
    q = np.where(inner, p, 0.5)
    log_pmf = (
        _log_comb(B)[None, :]
        + k[None, :] * np.log(q)[:, None]
        + (B - k)[None, :] * np.log1p(-q)[:, None]
    )
    pmf = np.exp(log_pmf)
    pmf[~inner] = 0.0
    pmf[p >= 1, B] = 1.0
    pmf[p <= 0, 0] = 1.0
    return (pmf * T).sum(axis=1)


def time_cost_table(model: Any, units: Sequence[Any], exits: Sequence[Any]) -> TimeCostTable:
    """The :class:`TimeCostTable` of ``model`` (a ``TimeCostModel``) over a cache's ``units`` and ``exits``;
    SearchError in one line when the table cannot time a configuration of these exits (a unit it does not time,
    an exit inside a fused bundle graph, an early exit without a step time)."""
    table: TimeTable = model.table
    B = model.batch_size
    unit_items = table.of_kind(*UNIT_ITEM_KINDS)
    timed = {u for it in unit_items for u in it.units}
    missing = [u.name for u in units if u.name not in timed]
    if missing:
        raise SearchError(
            f"cost table {table.name!r} has no time for unit {missing[0]!r}; "
            + (
                "a bundle's table times the exits that bundle serves: search on a table of the eager runtime, "
                "or of a bundle of a table enabling every exit, its heads graphs of their own"
                if table.target.get("runtime") == "onnx"
                else "profile this cache's model with python -m exits.profile"
            )
        )
    steps = {it.exit: it for it in table.of_kind("step")}
    finish, collect = table.of_kind("finish"), table.of_kind("collect")
    columns = [
        *unit_items,
        *[steps[e.name] for e in exits[:-1] if e.name in steps],
        *finish,
        *collect,
    ]
    needs = np.zeros((len(exits), len(columns)), dtype=bool)
    for i, e in enumerate(exits):
        mine = set(e.units)
        for j, it in enumerate(unit_items):
            hit = [u in mine for u in it.units]
            if any(hit) and not all(hit) and i < len(exits) - 1:
                raise SearchError(
                    f"cost table {table.name!r}: item {it.name!r} fuses units around exit {e.name!r}; "
                    "search on a table of the eager runtime, or of a bundle cut at every exit whose heads are "
                    "graphs of their own (an exit every configuration of a bundle's table enables runs fused)"
                )
            needs[i, j] = any(hit)
        if i < len(exits) - 1:
            if e.name not in steps:
                raise SearchError(f"cost table {table.name!r} has no step time for exit {e.name!r}")
            needs[i, columns.index(steps[e.name])] = True
    if finish:
        needs[-1, len(columns) - len(collect) - 1] = True
    if collect:
        needs[:, -1] = True  # once per batch: every sample pays T_collect(B) / B
    costs = np.array(
        [1e3 * float(interpolate(table.grid, it.median_s, np.array([B]))[0]) / B for it in columns]
    )
    return TimeCostTable(
        costs,
        needs,
        tuple(it.name for it in columns),
        "time",
        model=model,
        base_ms=1e3 * model.base_time_per_sample(),
    )


def time_table_record(costs: TimeCostTable) -> dict[str, Any]:
    """The export's ``cost_table`` record: the table's name, fingerprint and target, and the expectation."""
    table: TimeTable = costs.model.table
    target = table.target
    return {
        "name": table.name,
        "fingerprint": table.fingerprint,
        "device": str(target.get("device", "")),
        "threads": int(target.get("threads", 0) or 0),
        "batch_size": costs.batch_size,
        "runtime": table.runtime,
        "method": costs.model.method,
        "rebatch": costs.model.rebatch,
    }


def load_time_costs(
    cache: Any, name: str | None, batch_size: int | None = None, *, rebatch: bool = False
) -> TimeCostTable:
    """The time objective of ``cache`` from its table ``name`` at ``batch_size`` (the table's when None), for
    compaction or, ``rebatch``, re-batched serving (``search.time_cost``):
    SearchError in one line without a name, for a missing table, one of another cache or model, a grid short
    of the batch size, or a table that cannot time this cache's exits."""
    from .time_cost import TimeCostModel

    if name is None:
        raise SearchError(
            "objective 'time' needs a measured cost table: --cost-table NAME (python -m exits.profile "
            "writes CACHE/cost_tables/NAME.json)"
        )
    try:
        model = TimeCostModel.from_cache(cache, name, batch_size=batch_size, rebatch=rebatch)
        costs = get_cost_model("time", estimator=model).table(cache.units, cache.exits)
    except (CostTableError, CostModelError) as exc:
        raise SearchError(str(exc)) from None
    assert isinstance(costs, TimeCostTable)  # what the registered time model's table is
    return costs
