"""Exact dynamic-programming engine (``dp``): coordinate-exact sweeps over positions, traced over lam.

For one position, with every other position fixed, each sample that reaches it either leaves there
or goes on to the exit the rest of the configuration sends it to (its value-to-go). Sorting that
exit's scores over the samples reaching it and taking prefix sums gives the objectives of *every*
distinct threshold at once, exactly: no scalar minimiser, no grid. Sweeps alternate back to front
(backward induction: later positions first) and front to back until no position changes; the
trade-off weight lam of ``relative_cost + lam * error`` is traced from accurate to cheap with warm
starts. Every threshold cut a step evaluates is an exactly scored configuration; the non-dominated
ones are kept, which gives the front its non-convex stretches that a weighted sum alone cannot reach.
See ``docs/search.md`` for what this guarantees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from contract import float32_cut

from .._validation import SearchError, check_scalar
from ..config import ExitConfig
from ..front import non_dominated
from ..scores import score_range
from . import register_engine
from ._base import BaseEngine, Candidates
from ._cap import check_max_exits
from ._rule_options import RuleOptions

__all__ = ["DPEngine", "DPSolver", "Curve"]

_EPS = 1e-12
_CACHE_BYTES = 256 << 20  # curves kept for reuse across sweeps, at most this much


@dataclass
class Curve:
    """Exact objectives of every threshold cut of one option (head slot, or -1 = none) at position j.

    The reaching samples sorted by ``scores`` (descending); letting the first ``m`` of them leave
    gives ``err_at[m]`` errors (a count) and ``cost_at[m]`` summed cost, totals over the whole split,
    for ``m = 0..k``. A threshold can make every ``m`` except those in ``blocked`` (inside a run of
    equal scores, which stay together, and ``k`` when the last score is the lower bound). ``cuts``
    lists the others; ``err``, ``cost`` and ``tau`` give the objectives and thresholds per cut.
    """

    j: int
    slot: int
    err_at: np.ndarray
    cost_at: np.ndarray
    scores: np.ndarray
    blocked: np.ndarray
    bounds: tuple[float, float]
    current: int | None = None  # the m the current state takes, on the current option's curve

    @property
    def n_cuts(self) -> int:
        return self.err_at.size - self.blocked.size

    def cut_at(self, i) -> np.ndarray:
        """The ``m`` of cuts ``i`` (the i-th m that is not blocked)."""
        i = np.asarray(i, dtype=np.int64)
        if not self.blocked.size:
            return i
        shifted = self.blocked - np.arange(
            self.blocked.size
        )  # blocked m minus blocked ones before it
        return i + np.searchsorted(shifted, i, side="right")

    @cached_property
    def cuts(self) -> np.ndarray:
        return self.cut_at(np.arange(self.n_cuts))

    @cached_property
    def err(self) -> np.ndarray:
        return self.err_at[self.cuts]

    @cached_property
    def cost(self) -> np.ndarray:
        return self.cost_at[self.cuts]

    @cached_property
    def tau(self) -> np.ndarray:
        return self.thresholds_at(self.cuts)

    def thresholds_at(self, m) -> np.ndarray:
        """Thresholds letting the first ``m`` leave: the midpoint between the last score that leaves
        and the first that stays (the upper bound for no one, midway to the lower bound for everyone)."""
        m = np.asarray(m, dtype=np.int64)
        lo, hi = self.bounds
        k = self.scores.size
        if k == 0:
            return np.full(m.shape, hi)
        last_out = self.scores[np.maximum(m - 1, 0)].astype(np.float64)
        first_in = np.where(m < k, self.scores[np.minimum(m, k - 1)].astype(np.float64), lo)
        return np.where(m == 0, hi, (last_out + first_in) / 2)

    def weighted_best(self, scale_cost: float, scale_err: float) -> tuple[float, int]:
        """``(value, m)`` minimising ``scale_cost * cost + scale_err * err`` over the cuts."""
        val = self.err_at * (scale_err / scale_cost)
        val += self.cost_at  # the objective / scale_cost
        val[self.blocked] = np.inf
        m = int(np.argmin(val))
        return float(self.cost_at[m] * scale_cost + self.err_at[m] * scale_err), m

    def locate(self, tau: float) -> int:
        """The ``m`` threshold ``tau`` makes (ties never split, so it is always a cut)."""
        return int(
            np.count_nonzero(self.scores > float32_cut(tau))
        )  # the leave test, counted on a sorted curve

    @property
    def nbytes(self) -> int:
        return self.err_at.nbytes + self.cost_at.nbytes + self.scores.nbytes + self.blocked.nbytes


def descending_order(scores: np.ndarray) -> np.ndarray:
    """Indices sorting float32 ``scores`` descending, ties in sample order: an exact O(n) radix sort.

    float32 bit patterns are mapped to uint32 keys that sort like the values (-0.0 made +0.0 first),
    then two stable 16-bit passes (numpy's radix sort) order them.
    """
    u = (np.asarray(scores, dtype=np.float32) + np.float32(0.0)).view(
        np.uint32
    )  # -0.0 ties with 0.0
    key = ~np.where(u >> 31, ~u, u | np.uint32(0x80000000))  # ascending key = descending score
    first = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
    second = np.argsort((key[first] >> 16).astype(np.uint16), kind="stable")
    return first[second].astype(np.int32)


@dataclass
class _Context:
    """What position j sees from the rest of a state: the samples reaching it, where each would leave
    if it went on (``nxt``), whether that exit is wrong for it, and the totals of those that left before."""

    reach: np.ndarray
    nxt: np.ndarray
    go_wrong: np.ndarray
    fixed_err: int
    fixed_cost: float


class DPSolver:
    """Exact coordinate steps on one :class:`ExitProblem`; a state is ``(slots, taus)`` per position.

    ``slots[j]`` indexes ``problem.position_exits[j]`` (-1 = disabled); ``taus[j]`` its threshold.
    Each early exit's samples are sorted by score once. The curves of a step depend only on the rest
    of the state, so the last ones computed at each position are kept and reused while the rest of
    the state is unchanged (typically half of all steps: the sweep that confirms a solution, and the
    first sweep of the next lam).

    ``max_exits`` caps the enabled exits: the count is part of the state. A step at a position whose
    enabling would exceed the cap offers only "disabled" there, plus one swap: the enabled exit serving
    the fewest samples is disabled and every option at the position is scored exactly on that state; the
    swap is taken when the step's rule prefers it to the current state (the sweep then restarts, its
    running totals being stale).
    """

    def __init__(self, problem, *, max_exits: int | None = None):
        self.lo, self.hi = score_range(problem.score, problem.cache.n_classes)
        self.options = RuleOptions(problem) if len(getattr(problem, "rules", ())) > 1 else None
        problem = (
            self.options or problem
        )  # several rules: (exit, rule) options stand at each position
        self.problem = problem
        self.max_exits = max_exits
        self.n, self.J = problem.n_samples, problem.n_positions
        self.final = problem.final_exit
        self.base_cost = problem.costs.base_cost
        self.wrong = ~problem.correct  # (n_exits, n) bool
        self.exit_dtype = np.int16 if problem.n_exits <= np.iinfo(np.int16).max else np.int32
        self.order, self.sorted_scores, self.sorted_wrong = {}, {}, {}
        self.bounds = {e: (self.lo, self.hi) for ex in problem.position_exits for e in ex}
        if self.options is not None:
            self.bounds = self.options.bounds
        for ex in problem.position_exits:
            for e in ex:
                o = self.order[e] = descending_order(problem.scores[e])
                self.sorted_scores[e] = problem.scores[e][o]
                self.sorted_wrong[e] = self.wrong[e][o].view(np.int8)
        self.n_cut_evals = 0
        self._lookups: dict[tuple, np.ndarray] = {}
        self._cache: dict[int, tuple[tuple, list[Curve]]] = {}
        self._cache_bytes = 0
        self._served: dict[int, int] = {}  # samples leaving at each enabled position, last seen
        self._no_swap: dict[int, tuple] = {}  # (rule, state) at which a swap was found worthless
        self._swaps: dict[tuple, list[Curve]] = {}  # curves of swap states, reused across lams
        self._swap_bytes = 0

    # -- configurations -----------------------------------------------------------------------
    def empty_state(self) -> tuple[np.ndarray, np.ndarray]:
        return np.full(self.J, -1, dtype=np.int64), np.full(self.J, self.hi, dtype=np.float64)

    def exit_of(self, j: int, slot: int) -> int:
        return self.problem.position_exits[j][slot]

    def enabled(self, slots) -> list[int]:
        return [self.exit_of(j, s) for j, s in enumerate(slots) if s >= 0]

    def cost_lookup(self, slots) -> np.ndarray:
        """Cost of leaving at each enabled exit (and the final one) under ``slots``; 0 elsewhere."""
        key = tuple(int(s) for s in slots)
        lookup = self._lookups.get(key)
        if lookup is None:
            if len(self._lookups) > 4096:
                self._lookups.clear()
            en = self.enabled(slots)
            lookup = np.zeros(self.problem.n_exits)
            lookup[en + [self.final]] = self.problem.costs.exit_costs(en)
            self._lookups[key] = lookup
        return lookup

    def state_of(self, config: ExitConfig) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`to_config`."""
        slots, taus = self.empty_state()
        for e, t, r in zip(config.exits, config.thresholds, config.rule_names, strict=True):
            e = e if self.options is None else self.options.option(e, r)
            j = self.problem.position_of_exit[e]
            slots[j], taus[j] = self.problem.position_exits[j].index(e), t
        return slots, taus

    def to_config(self, slots, taus) -> ExitConfig:
        pairs = [(self.exit_of(j, s), float(taus[j])) for j, s in enumerate(slots) if s >= 0]
        if self.options is not None:
            return self.options.config([e for e, _ in pairs], [t for _, t in pairs])
        return self.problem.config((e for e, _ in pairs), (t for _, t in pairs))

    def _passes(self, j: int, slots, taus) -> tuple[int, np.ndarray]:
        """The exit enabled at position j and the samples whose score there is above its threshold."""
        e = self.exit_of(j, slots[j])
        return e, self.problem.rule.leaves(self.problem.scores[e], taus[j])

    def _leave(
        self, j: int, slots, taus, remaining: np.ndarray, lookup: np.ndarray
    ) -> tuple[int, float]:
        """Let the remaining samples that pass position j leave (``remaining`` is updated in place);
        return the errors and summed cost of those that left."""
        if slots[j] < 0:
            return 0, 0.0
        e, leave = self._passes(j, slots, taus)
        leave &= remaining
        k = int(np.count_nonzero(leave))
        remaining &= ~leave
        return int(np.count_nonzero(leave & self.wrong[e])), lookup[e] * k

    def totals(self, slots, taus) -> tuple[int, float]:
        """Errors (count) and summed cost of a state on the whole split."""
        lookup = self.cost_lookup(slots)
        remaining = np.ones(self.n, dtype=bool)
        err, cost = 0, 0.0
        for j in range(self.J):
            de, dc = self._leave(j, slots, taus, remaining, lookup)
            err, cost = err + de, cost + dc
        k = int(np.count_nonzero(remaining))
        err += int(np.count_nonzero(remaining & self.wrong[self.final]))
        return err, cost + lookup[self.final] * k

    # -- one exact coordinate step ------------------------------------------------------------
    def curves(self, slots, taus, j: int, ctx: _Context) -> tuple[list[Curve], bool]:
        """Every option at position ``j`` with all its threshold cuts, exactly, and whether they were
        computed now (False: reused, the rest of the state being the same as when they were)."""
        sl, tl = slots.tolist(), taus.tolist()
        key = (
            tuple(sl[:j] + sl[j + 1 :]),
            tuple(t for i, t in enumerate(tl) if i != j and sl[i] >= 0),
        )
        cached = self._cache.get(j)
        if cached is not None and cached[0] == key:
            curves, fresh = cached[1], False
        else:
            fresh = True
            curves = self._compute(slots, j, ctx)
            if cached is not None:
                self._cache_bytes -= sum(c.nbytes for c in cached[1])
                del self._cache[j]
            size = sum(c.nbytes for c in curves)
            if self._cache_bytes + size <= _CACHE_BYTES:
                self._cache[j] = (key, curves)
                self._cache_bytes += size
        for c in curves:
            c.current = None
            if c.slot == slots[j]:
                c.current = c.locate(taus[j])
        return curves, fresh

    def _swap_curves(self, slots, taus, j: int) -> tuple[list[Curve], bool]:
        """Every option's curve at ``j`` on a state (position j disabled), and whether they were computed
        now: kept for reuse while the state recurs (the weighted rule changes with lam, the curves do not)."""
        key = (j, tuple(slots.tolist()), tuple(taus[slots >= 0].tolist()))
        known = self._swaps.get(key)
        fresh = known is None
        if known is not None:
            curves = known
        else:
            curves = self._compute(slots, j, self.context(slots, taus, j))
            size = sum(c.nbytes for c in curves)
            if self._swap_bytes + size > _CACHE_BYTES:
                self._swaps.clear()
                self._swap_bytes = 0
            self._swaps[key] = curves
            self._swap_bytes += size
        for c in curves:
            c.current = None
        return curves, fresh

    def _none_curve(self, slots, j: int, ctx: _Context) -> Curve:
        """The "disabled" option at ``j`` alone: the state's totals with position j disabled."""
        costs = self.problem.costs
        sl = slots.tolist()
        before = [self.exit_of(i, s) for i, s in enumerate(sl[:j]) if s >= 0]
        later = [self.exit_of(i, s) for i, s in enumerate(sl) if i > j and s >= 0] + [self.final]
        used = np.logical_or.reduce(costs.needs[before], axis=0) | np.logical_or.accumulate(
            costs.needs[later], axis=0
        )
        lookup = np.zeros(self.problem.n_exits)
        lookup[later] = used @ costs.unit_costs
        err = ctx.fixed_err + int(np.count_nonzero(ctx.go_wrong & ctx.reach))
        cost = ctx.fixed_cost + float(lookup[ctx.nxt[ctx.reach]].sum())
        return Curve(
            j,
            -1,
            np.array([err]),
            np.array([cost]),
            np.zeros(0, dtype=np.float32),
            np.zeros(0, dtype=np.int64),
            (self.lo, self.hi),
            0,
        )

    def _compute(self, slots, j: int, ctx: _Context) -> list[Curve]:
        costs = self.problem.costs
        sl = slots.tolist()
        before = [self.exit_of(i, s) for i, s in enumerate(sl[:j]) if s >= 0]
        later = [self.exit_of(i, s) for i, s in enumerate(sl) if i > j and s >= 0] + [self.final]
        used_before = np.logical_or.reduce(costs.needs[before], axis=0)  # units paid before j
        used_later = used_before | np.logical_or.accumulate(
            costs.needs[later], axis=0
        )  # ... to go on (j off)
        none_lookup = np.zeros(self.problem.n_exits)
        none_lookup[later] = used_later @ costs.unit_costs
        go_cost = none_lookup[ctx.nxt]  # (n,) cost where each would go
        n_reach = int(np.count_nonzero(ctx.reach))
        err0 = ctx.fixed_err + int(np.count_nonzero(ctx.go_wrong & ctx.reach))
        go_wrong = ctx.go_wrong.view(np.int8)
        out, go_cost_sum = [], 0.0
        for slot, e in enumerate(self.problem.position_exits[j]):
            bounds = self.bounds[e]
            leave_cost = float((used_before | costs.needs[e]) @ costs.unit_costs)
            extra = (
                costs.needs[e] & ~used_later
            ) @ costs.unit_costs  # what enabling e adds to going on
            o = self.order[e]
            if n_reach == self.n:  # everyone reaches j
                idx, s, leave_wrong = o, self.sorted_scores[e], self.sorted_wrong[e]
            else:
                pos = np.flatnonzero(ctx.reach.take(o))  # reaching samples, best score first
                idx, s, leave_wrong = (
                    o.take(pos),
                    self.sorted_scores[e].take(pos),
                    self.sorted_wrong[e].take(pos),
                )
            k = s.size
            stay_cost = go_cost.take(idx)
            go_cost_sum = float(stay_cost.sum())
            if np.all(extra == extra[0]):  # the same wherever they go on
                stay_sum, leave_gain = go_cost_sum + extra[0] * k, leave_cost - extra[0]
            else:
                lookup = none_lookup.copy()
                lookup[later] += extra
                stay_cost = lookup.take(ctx.nxt.take(idx))
                stay_sum, leave_gain = float(stay_cost.sum()), leave_cost
            err_at = np.empty(k + 1, dtype=np.int64)  # totals as prefix sums of
            err_at[0] = err0  # (leave here - go on)
            np.subtract(leave_wrong, go_wrong.take(idx), out=err_at[1:])
            np.cumsum(err_at, out=err_at)
            cost_at = np.empty(k + 1)
            cost_at[0] = ctx.fixed_cost + stay_sum
            np.subtract(leave_gain, stay_cost, out=cost_at[1:])
            np.cumsum(cost_at, out=cost_at)
            # m lets the first m leave: blocked inside runs of equal scores (they stay together)
            blocked = np.flatnonzero(s[:-1] == s[1:]) + 1
            if k and not s[-1] > bounds[0]:
                blocked = np.append(blocked, k)
            out.append(Curve(j, slot, err_at, cost_at, s, blocked, bounds))
            self.n_cut_evals += k + 1 - blocked.size
        self.n_cut_evals += 1
        none = Curve(
            j,
            -1,
            np.array([err0]),
            np.array([ctx.fixed_cost + go_cost_sum]),
            np.zeros(0, dtype=np.float32),
            np.zeros(0, dtype=np.int64),
            (self.lo, self.hi),
        )
        return [none] + out

    # -- sweeps ---------------------------------------------------------------------------------
    def _step(self, slots, taus, j, ctx, select, harvest) -> int:
        """One coordinate step at ``j``: 0 nothing changed, 1 position j changed, 2 the state changed
        elsewhere too (a swap under the exit cap, or a state over the cap repaired): the sweep's
        running totals are stale."""
        n_others = int(np.count_nonzero(slots >= 0)) - int(slots[j] >= 0)
        if self.max_exits is not None and n_others >= self.max_exits and slots[j] >= 0:
            slots[j], taus[j] = -1, self.hi  # over the cap (a given start)
            return 2
        if (
            self.max_exits is not None and n_others >= self.max_exits
        ):  # "disabled" alone fits the cap
            return self._swap(slots, taus, j, self._none_curve(slots, j, ctx), select, harvest)
        curves, fresh = self.curves(slots, taus, j, ctx)
        if harvest is not None and fresh:
            harvest(curves, slots, taus)
        if slots[j] >= 0:
            self._served[j] = next(c.current for c in curves if c.current is not None)
        return int(self._apply(select(curves, slots, taus, j), slots, taus, j))

    def context(self, slots, taus, j: int) -> _Context:
        """What position ``j`` sees from the rest of the state, computed afresh."""
        lookup = self.cost_lookup(slots)
        remaining = np.ones(self.n, dtype=bool)
        err, cost = 0, 0.0
        for i in range(j):
            de, dc = self._leave(i, slots, taus, remaining, lookup)
            err, cost = err + de, cost + dc
        nxt = np.full(self.n, self.final, dtype=self.exit_dtype)
        go_wrong = self.wrong[self.final].copy()
        for i in reversed(range(j + 1, self.J)):
            self._go_on(i, slots, taus, nxt, go_wrong)
        return _Context(remaining, nxt, go_wrong, err, cost)

    def _swap(self, slots, taus, j, current: Curve, select, harvest) -> int:
        """At a disabled position ``j`` with the cap reached: for each enabled exit, those that served the
        fewest samples first, score every option at ``j`` on the state with that exit disabled; take the
        first that ``select`` prefers to the current state (``current``: its totals)."""
        key = (tuple(slots.tolist()), tuple(taus.tolist()))
        seen = self._no_swap.get(j)
        if seen is not None and seen[0] is select and seen[1] == key:
            return 0
        enabled = sorted(np.flatnonzero(slots >= 0), key=lambda p: self._served.get(int(p), 0))
        keep = Curve(
            j,
            -2,
            current.err_at,
            current.cost_at,
            current.scores,
            current.blocked,
            current.bounds,
            0,
        )
        for i in enabled:
            s2, t2 = slots.copy(), taus.copy()
            s2[i], t2[i] = -1, self.hi
            curves, fresh = self._swap_curves(s2, t2, j)
            if harvest is not None and fresh:
                harvest(curves, s2, t2)
            choice = select([keep] + curves, slots, taus, j)
            if choice is not None and choice[0] != -2:
                slots[i], taus[i] = -1, self.hi
                self._served.pop(int(i), None)
                self._apply(choice, slots, taus, j)
                return 2
        self._no_swap[j] = (select, key)
        return 0

    def _go_on(self, j, slots, taus, nxt, go_wrong) -> None:
        """Samples passing position j's enabled exit now leave there when they reach it (in place)."""
        if slots[j] >= 0:
            e, leave = self._passes(j, slots, taus)
            nxt += (e - nxt) * leave  # np.where, but faster
            go_wrong &= ~leave
            go_wrong |= leave & self.wrong[e]

    def sweep(
        self, slots, taus, select: Callable, *, backward: bool, harvest: Callable | None = None
    ) -> bool:
        """One pass over all positions applying ``select(curves, slots, taus, j)``; True if anything changed."""
        changed = False
        if backward:
            lookup = self.cost_lookup(slots)
            reach_at: list[np.ndarray] = []
            fixed: list[tuple[int, float]] = []
            remaining = np.ones(self.n, dtype=bool)
            err, cost = 0, 0.0
            for j in range(self.J):
                reach_at.append(remaining.copy())
                fixed.append((err, cost))
                de, dc = self._leave(j, slots, taus, remaining, lookup)
                err, cost = err + de, cost + dc
            nxt = np.full(self.n, self.final, dtype=self.exit_dtype)
            go_wrong = self.wrong[self.final].copy()
            for j in reversed(range(self.J)):
                ctx = _Context(reach_at[j], nxt, go_wrong, fixed[j][0], fixed[j][1])
                step = self._step(slots, taus, j, ctx, select, harvest)
                if step == 2:
                    return True
                changed |= step == 1
                self._go_on(j, slots, taus, nxt, go_wrong)
            return changed
        after: list[tuple[np.ndarray, np.ndarray]] = []  # filled from the last position back
        nxt = np.full(self.n, self.final, dtype=self.exit_dtype)
        go_wrong = self.wrong[self.final].copy()
        for j in reversed(range(self.J)):
            after.append((nxt.copy(), go_wrong.copy()))
            self._go_on(j, slots, taus, nxt, go_wrong)
        after.reverse()
        remaining = np.ones(self.n, dtype=bool)
        err, cost = 0, 0.0
        for j in range(self.J):
            step = self._step(
                slots,
                taus,
                j,
                _Context(remaining, after[j][0], after[j][1], err, cost),
                select,
                harvest,
            )
            if step == 2:
                return True
            changed |= step == 1
            de, dc = self._leave(j, slots, taus, remaining, self.cost_lookup(slots))
            err, cost = err + de, cost + dc
        return changed

    @staticmethod
    def _apply(choice, slots, taus, j) -> bool:
        if choice is None:
            return False
        slot, tau = choice
        slots[j], taus[j] = slot, tau
        return True

    @staticmethod
    def current_point(curves: list[Curve]) -> tuple[int, float]:
        """``(err, cost)`` of the current state, read off the current option's curve."""
        cur = next(c for c in curves if c.current is not None)
        return int(cur.err_at[cur.current]), float(cur.cost_at[cur.current])

    def weighted_select(self, lam: float) -> Callable:
        """Selection rule minimising ``relative_cost + lam * error``; keeps the current option on ties."""
        scale_c, scale_e = 1.0 / (self.n * self.base_cost), lam / self.n

        def select(curves, slots, taus, j):
            e0, c0 = self.current_point(curves)
            best_val, best = c0 * scale_c + e0 * scale_e - _EPS, None
            for c in curves:
                val, m = c.weighted_best(scale_c, scale_e)
                if val < best_val:
                    best_val, best = val, (c.slot, float(c.thresholds_at(m)))
            return best

        return select

    def solve(self, slots, taus, select: Callable, *, max_sweeps: int = 12, harvest=None) -> int:
        """Alternate backward and forward sweeps until one changes nothing; return sweeps run."""
        for i in range(max_sweeps):
            if not self.sweep(slots, taus, select, backward=(i % 2 == 0), harvest=harvest):
                return i + 1
        return max_sweeps


def _spread(size: int, k: int) -> np.ndarray:
    """``k`` distinct indices spread evenly over ``range(size)`` (all of them when ``size <= k``)."""
    if size <= k:
        return np.arange(size)
    if k == 1:
        return np.zeros(1, dtype=np.int64)
    # round(i * (size - 1) / (k - 1)), halves to even as np.round, in integers; steps above 1: distinct
    q, r = np.divmod(np.arange(k, dtype=np.int64) * (size - 1), k - 1)
    return q + ((2 * r > k - 1) | ((2 * r == k - 1) & (q % 2 == 1)))


class _Archive:
    """Non-dominated threshold cuts seen during the sweeps, with enough to rebuild their configs:
    per harvested curve, its points ``F`` and ``(state, j, slot, thresholds)``."""

    def __init__(self, per_curve: int):
        self.per_curve = per_curve
        self.F: list[np.ndarray] = []
        self.refs: list[tuple] = []

    def __call__(self, curves: list[Curve], slots, taus) -> None:
        """Keep each curve's non-dominated cuts (at most ``per_curve``, spread along the curve), found
        among an even subset of ``8 * per_curve`` of its cuts; all curves of a step at once."""
        ms = [c.cut_at(_spread(c.n_cuts, 8 * self.per_curve)) for c in curves]
        sizes = np.array([m.size for m in ms])
        seg = np.repeat(np.arange(len(curves)), sizes)
        err = np.concatenate([c.err_at[m] for c, m in zip(curves, ms, strict=True)])
        cost = np.concatenate([c.cost_at[m] for c, m in zip(curves, ms, strict=True)])
        # non-dominated within each curve: sort by (curve, cost, err); shifting each curve's errors
        # below all earlier curves' makes one running minimum restart at every curve
        order = np.lexsort((err, cost, seg))
        shifted = err[order] - seg[order] * (int(err.max()) - int(err.min()) + 1)
        best_before = np.concatenate(
            [[np.iinfo(np.int64).max], np.minimum.accumulate(shifted)[:-1]]
        )
        kept = order[shifted < best_before]  # grouped by curve, cheapest first
        kept_seg = seg[kept]
        bounds = np.searchsorted(kept_seg, np.arange(len(curves) + 1))
        state = (slots.copy(), taus.copy())
        firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        for i, c in enumerate(curves):
            mine = kept[bounds[i] : bounds[i + 1]]
            mine = mine[_spread(mine.size, self.per_curve)]
            if mine.size:
                self.F.append(np.column_stack([err[mine], cost[mine]]).astype(np.float64))
                self.refs.append((state, c.j, c.slot, c.thresholds_at(ms[i][mine - firsts[i]])))

    def front(
        self, solver: DPSolver, max_configs: int | None
    ) -> tuple[list[ExitConfig], np.ndarray]:
        """The non-dominated cuts (cost-sorted), thinned to ``max_configs`` along cost, as configs."""
        if not self.F:
            return [], np.zeros((0, 2))
        sizes = np.array([f.shape[0] for f in self.F])
        F = np.concatenate(self.F)
        F = np.column_stack([F[:, 0] / solver.n, F[:, 1] / (solver.n * solver.base_cost)])
        idx = non_dominated(F)
        if max_configs is not None and idx.size > max_configs:
            idx = idx[_thin(F[idx], max_configs)]
        owner = np.repeat(np.arange(sizes.size), sizes)
        first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        configs = []
        for i in idx:
            (slots, taus), j, slot, thresholds = self.refs[owner[i]]
            s, t = slots.copy(), taus.copy()
            s[j], t[j] = slot, thresholds[i - first[owner[i]]]
            configs.append(solver.to_config(s, t))
        return configs, F[idx]


def default_lams(n_lams: int) -> np.ndarray:
    """Trade-off weights traced from accurate (large) to cheap (small)."""
    return np.geomspace(5000.0, 0.02, n_lams)


@register_engine
class DPEngine(BaseEngine):
    """Exact coordinate DP traced over lam (see module docstring).

    Options: ``n_lams`` trade-off weights on a log grid (or ``lams`` explicitly), ``max_sweeps`` per
    lam, ``per_curve`` non-dominated cuts kept per step, ``max_configs`` to thin the returned front
    evenly along cost (None keeps all), ``max_exits`` to enable at most that many exits per configuration
    (None: no cap; see :class:`DPSolver`). For ImageNet-train-sized splits, fit on a subsample and
    score the front exactly on every sample: :mod:`search.subsample` (the command line does so).
    """

    name = "dp"

    def __init__(
        self,
        *,
        n_lams: int = 24,
        lams: list[float] | None = None,
        max_sweeps: int = 12,
        per_curve: int = 64,
        max_configs: int | None = 256,
        max_exits: int | None = None,
    ):
        self.n_lams = n_lams
        self.lams = lams
        self.max_sweeps = max_sweeps
        self.per_curve = per_curve
        self.max_configs = max_configs
        self.max_exits = max_exits

    def _lams(self) -> np.ndarray:
        """The trade-off weights to trace, once every option is checked (SearchError naming a bad one)."""
        for name in ("n_lams", "max_sweeps", "per_curve"):
            check_scalar(getattr(self, name), name, min_val=1, integer=True)
        if self.max_configs is not None:
            check_scalar(self.max_configs, "max_configs", min_val=1, integer=True)
        if self.lams is None:
            return default_lams(self.n_lams)
        try:
            lams = np.asarray(self.lams, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            lams = np.array([np.nan])
        if lams.size == 0 or not (np.isfinite(lams) & (lams >= 0)).all():
            raise SearchError(
                f"`lams` must be a non-empty list of finite numbers >= 0; got {self.lams!r}"
            )
        return lams

    def _run(self, problem, budget, rng, callback):
        lams = self._lams()
        check_max_exits(self.max_exits, problem.n_positions)
        solver = DPSolver(problem, max_exits=self.max_exits)
        archive = _Archive(self.per_curve)
        slots, taus = solver.empty_state()
        sweeps = 0
        for lam in sorted(lams, reverse=True):
            sweeps += solver.solve(
                slots,
                taus,
                solver.weighted_select(lam),
                max_sweeps=self.max_sweeps,
                harvest=archive,
            )
            if callback is not None:
                callback(self, problem)
        problem.n_evals += solver.n_cut_evals
        configs, F = archive.front(solver, self.max_configs)
        message = f"{len(lams)} lams, {sweeps} sweeps, {solver.n_cut_evals} cuts scored"
        return Candidates(configs, F, message)


def _thin(F: np.ndarray, k: int) -> np.ndarray:
    """``k`` indices of a cost-sorted front spread evenly along relative cost, both ends kept."""
    targets = np.linspace(F[0, 1], F[-1, 1], k)
    idx = np.searchsorted(F[:, 1], targets).clip(0, len(F) - 1)  # sorted: drop repeats
    return idx[np.concatenate([[True], idx[1:] != idx[:-1]])]
