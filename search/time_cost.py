"""The time cost model: expected wall-clock time per sample of a configuration at batch size B under compaction.

A batch of B samples runs each timed item (a unit, a bundle graph, a runtime step) on the N_i samples of the
batch that reach it, so the batch costs ``sum_i T_i(N_i) + T_collect(B)`` and a sample

    t(config) = ( sum_i E[T_i(N_i)] + T_collect(B) ) / B,

with ``T_i`` the measured time of item i on n rows (``data_cache.cost_tables``: piecewise linear between the
grid's row counts, 0 rows cost nothing). At B = 1 this is additive: ``sum_i P(i reached) T_i(1) + T_collect(1)``.

The expectation of a sum is the sum of the expectations, so only each N_i's marginal law matters, however
correlated the samples' reach is across items. Three ways to evaluate it (``method``):

- ``binomial`` (default): N_i ~ Binomial(B, p_i), p_i the share of the cache's samples that reach item i:
  the exact answer when a batch's samples are drawn independently from the distribution the cache samples;
  deterministic and O(B) per item.
- ``hypergeometric``: batches drawn without replacement from the cache's own n samples (exact for that
  finite population; it differs from the binomial by a factor (n - B) / (n - 1) in the variance of N_i only,
  which is negligible for n >> B).
- ``replay``: the mean over ``rounds`` random batches of the cache's samples (without replacement within a
  batch), a Monte Carlo estimate of the hypergeometric answer; kept to check the other two on real caches.

**A bundle's batch-1 graph** (``exits/onnx_chain.py``): a bundle whose exits are all fused runs a one-row batch of
a configuration enabling exactly those exits with ``max_prob`` as one session call, timed by the profile as ``path``
items (the router's whole call for a row leaving at each exit); at B = 1 such a configuration costs
``sum_k P(leave at k) T_path_k(1)``, the call's own overhead included. When the table also times each path right
after each path (``TimedItem.after``: ``A[j, k]``, path k's call after a call leaving at j), the rows of a stream
being independent draws, a row leaving at k follows one leaving at j with probability ``p_j`` and the cost is
``sum_jk p_j p_k A[j, k]`` (``p' A p``): a path after another costs more than after itself.

**Re-batching** (``rebatch=True``: ``ExitRuntime.run_batches(..., rebatch=True)``, ``exits.validate --rebatch``):
the survivors of several input batches wait before each stage until B of them are there, so every item runs full
batches of B rows and a sample that reaches item i pays ``T_i(B) / B`` of it: the cost is additive again at any
B, ``t(config) = sum_i p_i T_i(B) / B + T_collect(B) / B`` (the last, partial batch of a stream is ignored).

numpy only. The class follows the ``contract.costs.CostModel`` conventions (``name``, ``quantity``, ``additive``:
false under compaction at B > 1, where its cost needs every sample's exit, not exit fractions); it is the estimator
the registered cost model ``time`` (``contract/costs/time.py``) is bound to (``get_cost_model("time",
estimator=model)``), and its search cost table is ``search.time_objective.TimeCostTable``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from contract import exit_partners, reads_partner
from data_cache.cost_tables import TimedItem, TimeTable, interpolate, read_cost_table

from ._validation import SearchError, as_generator

__all__ = [
    "METHODS",
    "TimeEstimate",
    "TimeCostModel",
    "binomial_pmf",
    "hypergeometric_pmf",
]

METHODS = ("binomial", "hypergeometric", "replay")


def binomial_pmf(n: int, p: float) -> np.ndarray:
    """P(N = k), k = 0..n, for N ~ Binomial(n, p)."""
    k = np.arange(n + 1)
    if p <= 0.0 or p >= 1.0:
        return (k == (n if p >= 1.0 else 0)).astype(np.float64)
    log_comb = math.lgamma(n + 1) - _lgamma(k + 1) - _lgamma(n - k + 1)
    return np.exp(log_comb + k * math.log(p) + (n - k) * math.log1p(-p))


def hypergeometric_pmf(n: int, population: int, successes: int) -> np.ndarray:
    """P(N = k), k = 0..n: successes among ``n`` drawn without replacement from ``population`` holding ``successes``."""
    k = np.arange(n + 1)
    ok = (k <= successes) & (n - k <= population - successes)
    kk = k[ok]
    log_p = (
        _log_comb(successes, kk)
        + _log_comb(population - successes, n - kk)
        - _log_comb(population, n)
    )
    out = np.zeros(n + 1)
    out[ok] = np.exp(log_p)
    return out


def _lgamma(x: np.ndarray) -> np.ndarray:
    return np.array([math.lgamma(v) for v in np.asarray(x, dtype=np.float64).ravel()]).reshape(
        np.shape(x)
    )


def _log_comb(n: int, k: Any) -> np.ndarray:
    k = np.asarray(k)
    return math.lgamma(n + 1) - _lgamma(k + 1) - _lgamma(n - k + 1)


@dataclass(frozen=True)
class TimeEstimate:
    """Expected seconds per sample of a configuration (``time_per_sample_s``) and of the base model on the
    same target, and each item's share of it (``items``: name -> seconds per sample)."""

    time_per_sample_s: float
    base_time_per_sample_s: float
    batch_size: int
    items: dict[str, float]

    @property
    def relative_time(self) -> float:
        return self.time_per_sample_s / self.base_time_per_sample_s

    @property
    def speedup(self) -> float:
        return self.base_time_per_sample_s / self.time_per_sample_s


class TimeCostModel:
    """Predicted time per sample from a cost table, for configurations of the cache it was profiled on.

    ``exit_units``: per cache exit (execution order, final last) the unit names it needs; ``exit_names`` the
    exits' names (steps are matched to enabled exits by name). ``batch_size`` defaults to the table's and
    must lie within its grid. ``method``: one of :data:`METHODS`; ``rounds`` and ``seed`` serve ``replay``.
    ``partners``: each exit's partner (``contract.partner_exit`` of the cache's exits), whose head an exit deciding
    with a rule that reads it runs for every row reaching it (``estimate(..., rules=)``). ``rebatch``: predict
    re-batched serving (every item on full batches; additive, see the module docstring) instead of compaction.
    """

    name = "time"
    quantity = "seconds per sample"

    def __init__(
        self,
        table: TimeTable,
        exit_units: Sequence[Sequence[str]],
        exit_names: Sequence[str],
        *,
        batch_size: int | None = None,
        method: str = "binomial",
        rounds: int = 2000,
        seed: Any = 0,
        partners: Mapping[int, int] | None = None,
        rebatch: bool = False,
    ):
        self.table, self.method, self.rounds, self.seed = table, method, rounds, seed
        self.rebatch = bool(rebatch)
        self.partners = dict(partners or {})
        self.batch_size = table.batch_size if batch_size is None else batch_size
        if method not in METHODS:
            raise SearchError(
                f"unknown time expectation method {method!r}; choose one of {list(METHODS)}"
            )
        if not 1 <= self.batch_size <= table.grid[-1]:
            raise SearchError(
                f"batch size {self.batch_size} outside the cost table's grid (1 to {table.grid[-1]})"
            )
        self.exit_names = tuple(exit_names)
        self.unit_names = tuple(dict.fromkeys(u for units in exit_units for u in units))
        col = {u: j for j, u in enumerate(self.unit_names)}
        self.needs = np.zeros((len(self.exit_names), len(self.unit_names)), dtype=bool)
        for i, units in enumerate(exit_units):
            self.needs[i, [col[u] for u in units]] = True
        self._cols = {
            it.name: np.array([col[u] for u in it.units if u in col], dtype=np.int64)
            for it in table.of_kind("segment", "head", "saver", "graph")
        }
        self._steps = {it.exit: it for it in table.of_kind("step")}

    @classmethod
    def from_cache(
        cls, cache: Any, name: str, *, batch_size: int | None = None, **kwargs: Any
    ) -> TimeCostModel:
        """The model of table ``name`` stored beside ``cache`` (checked against it: ``read_cost_table``)."""
        table = read_cost_table(cache, name, batch_size=batch_size)
        return cls(
            table,
            [e.units for e in cache.exits],
            [e.name for e in cache.exits],
            batch_size=batch_size,
            partners=exit_partners(cache.exits),
            **kwargs,
        )

    def cost_table(self, units: Sequence[Any], exits: Sequence[Any]) -> Any:
        """The search's cost table of this model (ms per sample; ``search.time_objective.TimeCostTable``)."""
        from .time_objective import time_cost_table

        return time_cost_table(self, units, exits)

    @property
    def additive(self) -> bool:
        """Whether a sample's cost depends on its own path alone: at B = 1, or re-batched."""
        return self.batch_size == 1 or self.rebatch

    def get_params(self) -> dict[str, Any]:
        return {
            "table": self.table.name,
            "batch_size": self.batch_size,
            "method": self.method,
            "rebatch": self.rebatch,
        }

    # -- the model ----------------------------------------------------------------------------
    def base_time_per_sample(self) -> float:
        """The base model's measured time per sample at the batch size (its own forward, no exits)."""
        base = self.table.of_kind("base")[0]
        return float(self._time(base, np.array([self.batch_size]))[0]) / self.batch_size

    def time_per_sample(
        self, enabled: Sequence[int], leave: np.ndarray, rules: Sequence[str] | None = None
    ) -> float:
        """Expected seconds per sample; ``leave`` ``(n_samples,)``: the exit index each cached sample leaves at."""
        return self.estimate(enabled, leave, rules).time_per_sample_s

    def estimate(
        self, enabled: Sequence[int], leave: np.ndarray, rules: Sequence[str] | None = None
    ) -> TimeEstimate:
        """The :class:`TimeEstimate` of the configuration enabling ``enabled`` (exit indices, execution order)
        whose samples leave at ``leave`` (``search.ExitProblem.assign``), deciding with ``rules`` (one per enabled
        exit; a rule reading the partner runs its head: None, none does)."""
        groups = self._groups(enabled, np.asarray(leave))
        paths = self._paths(enabled, rules)
        # one row through the bundle's batch-1 graph: one timed call per exit it leaves at
        if paths is not None:
            share = np.bincount(groups, minlength=len(paths)) / len(groups)
            per_call = _path_times(paths, [float(self._time(it, np.array([1]))[0]) for it in paths])
            items = {
                it.name: float(share[k] * (share @ per_call[:, k])) for k, it in enumerate(paths)
            }
            return TimeEstimate(sum(items.values()), self.base_time_per_sample(), 1, items)
        paired = [e for e, r in zip(enabled, rules or (), strict=False) if reads_partner(r)]
        reach = self._reach(list(enabled), paired)
        B = self.batch_size
        batches = (
            self._replay_batches(len(groups))
            if self.method == "replay" and not self.rebatch
            else None
        )
        items = {it.name: float(self._expect(it, r, groups, batches)) / B for it, r in reach}
        collect = self.table.of_kind("collect")
        if collect:
            items[collect[0].name] = float(self._time(collect[0], np.array([B]))[0]) / B
        return TimeEstimate(sum(items.values()), self.base_time_per_sample(), B, items)

    # -- pieces -------------------------------------------------------------------------------
    def _paths(self, enabled: Sequence[int], rules: Sequence[str] | None) -> list[TimedItem] | None:
        """At batch 1, the table's ``path`` items (a bundle's batch-1 graph, ``exits/onnx_chain.py``) in the order of
        ``enabled`` and the final exit, when it has them for exactly these exits and every rule is ``max_prob`` (the
        router then runs the one graph); else None."""
        if self.batch_size != 1 or self.rebatch:
            return None
        paths = {it.exit: it for it in self.table.of_kind("path")}
        names = [self.exit_names[e] for e in (*enabled, len(self.exit_names) - 1)]
        if len(paths) != len(names) or any(n not in paths for n in names):
            return None
        if any(r != "max_prob" for r in rules or ("max_prob",) * len(enabled)):
            return None
        return [paths[n] for n in names]

    def _groups(self, enabled: Sequence[int], leave: np.ndarray) -> np.ndarray:
        """Per sample, the position in ``enabled + [final]`` of the exit it leaves at."""
        path = np.array([*enabled, len(self.exit_names) - 1])
        lookup = np.full(len(self.exit_names), -1)
        lookup[path] = np.arange(len(path))
        groups = lookup[leave]
        if len(leave) == 0 or (groups < 0).any():
            raise SearchError("leave: every sample must leave at an enabled exit or the final one")
        return groups

    def _reach(
        self, enabled: list[int], paired: Sequence[int] = ()
    ) -> list[tuple[TimedItem, np.ndarray]]:
        """(item, reached) per item that runs: ``reached[k]`` whether samples of group k run it; each exit of
        ``paired`` also runs its partner's units for the rows reaching it."""
        path = [*enabled, len(self.exit_names) - 1]
        rows = self.needs[path].copy()
        for j, e in enumerate(enabled):
            if e in paired:
                if e not in self.partners:
                    raise SearchError(
                        f"exit {self.exit_names[e]!r} has no partner to run for its rule"
                    )
                rows[j] |= self.needs[self.partners[e]]
        used = np.logical_or.accumulate(rows, axis=0)
        covered = np.zeros(len(self.unit_names), dtype=bool)
        out: list[tuple[TimedItem, np.ndarray]] = []
        for it in self.table.of_kind("segment", "head", "saver", "graph"):
            cols = self._cols[it.name]
            if not len(cols):
                continue
            any_, all_ = np.any(used[:, cols], axis=1), np.all(used[:, cols], axis=1)
            if (any_ != all_).any():
                raise SearchError(
                    f"cost table {self.table.name!r}: item {it.name!r} runs units of which this "
                    "configuration's samples reach only some; profile a bundle cut at its exits (the bundle "
                    "exported for this configuration)"
                )
            covered[cols] = True
            if any_.any():
                out.append((it, any_))
        missing = used.any(axis=0) & ~covered
        if missing.any():
            raise SearchError(
                f"cost table {self.table.name!r} has no time for unit "
                f"{self.unit_names[int(np.flatnonzero(missing)[0])]!r}, which this configuration runs"
            )
        groups = np.arange(len(path))
        for j, e in enumerate(enabled):
            step = self._steps.get(self.exit_names[e])
            if step is None:
                raise SearchError(
                    f"cost table {self.table.name!r} has no step time for exit {self.exit_names[e]!r}"
                )
            out.append((step, np.greater_equal(groups, j)))
        finish = self.table.of_kind("finish")
        if finish:
            out.append((finish[0], np.equal(groups, len(path) - 1)))
        return out

    def _time(self, item: TimedItem, n: np.ndarray) -> np.ndarray:
        return interpolate(self.table.grid, item.median_s, n)

    def _expect(
        self, item: TimedItem, reached: np.ndarray, groups: np.ndarray, batches: np.ndarray | None
    ) -> float:
        """E[T_item(N)] for N the number of a batch's samples whose group is ``reached`` (``batches``: the
        sample rows of the replayed batches)."""
        B = self.batch_size
        hits = reached[groups]
        if self.rebatch:  # full batches of B: each reaching row pays T(B) / B
            return float(hits.mean() * self._time(item, np.array([B]))[0])
        if batches is not None:
            return float(self._time(item, hits[batches].sum(axis=1)).mean())
        k = np.arange(B + 1)
        if self.method == "binomial":
            pmf = binomial_pmf(B, float(hits.mean()))
        else:
            if B > len(hits):
                raise SearchError(
                    f"method 'hypergeometric' draws batches of {B} from the cache's {len(hits)} "
                    "samples; use 'binomial'"
                )
            pmf = hypergeometric_pmf(B, len(hits), int(hits.sum()))
        return float(pmf @ self._time(item, k))

    def _replay_batches(self, n: int) -> np.ndarray:
        """``(rounds, B)`` sample rows: random batches without replacement within each, shared by all items."""
        rng = as_generator(self.seed)
        if self.batch_size > n:
            raise SearchError(
                f"method 'replay' draws batches of {self.batch_size} from the cache's {n} samples; "
                "use 'binomial'"
            )
        return np.stack([rng.choice(n, self.batch_size, replace=False) for _ in range(self.rounds)])


def _path_times(paths: Sequence[TimedItem], alone: Sequence[float]) -> np.ndarray:
    """``A[j, k]``: seconds of path k's call after a call leaving at path j's exit (``after``), or, for a table that
    has none, ``alone[k]`` (its calls after one another) whatever came before."""
    if all(it.after is not None for it in paths):
        return np.array([[float(it.after[prev.exit]) for it in paths] for prev in paths])  # type: ignore[index]
    return np.tile(np.asarray(alone, dtype=np.float64), (len(paths), 1))
