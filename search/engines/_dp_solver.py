"""The dp engine's exact coordinate steps and sweeps (:class:`DPSolver`); see :mod:`search.engines.dp`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._dp_curve import Context, Curve
from ._dp_state import DPState

__all__ = ["DPSolver"]

_EPS = 1e-12
_CACHE_BYTES = 256 << 20  # curves kept for reuse across sweeps, at most this much


@dataclass
class _Rest:
    """What going on from position j costs, shared by every option there: the units paid before j
    and to go on with j disabled, the later enabled exits (and the final one), the cost of leaving at
    each of them, each sample's cost where it would go, how many reach j and the errors with j off."""

    used_before: np.ndarray
    used_later: np.ndarray
    later: list[int]
    none_lookup: np.ndarray
    go_cost: np.ndarray
    n_reach: int
    err0: int


class DPSolver(DPState):
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
        super().__init__(problem, max_exits=max_exits)
        self.n_cut_evals = 0
        self._cache: dict[int, tuple[tuple, list[Curve]]] = {}
        self._cache_bytes = 0
        self._served: dict[int, int] = {}  # samples leaving at each enabled position, last seen
        self._no_swap: dict[int, tuple] = {}  # (rule, state) at which a swap was found worthless
        self._swaps: dict[tuple, list[Curve]] = {}  # curves of swap states, reused across lams
        self._swap_bytes = 0

    # -- one exact coordinate step ------------------------------------------------------------
    def curves(self, slots, taus, j: int, ctx: Context) -> tuple[list[Curve], bool]:
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

    def _none_curve(self, slots, j: int, ctx: Context) -> Curve:
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

    def _compute(self, slots, j: int, ctx: Context) -> list[Curve]:
        """Every option's curve at ``j`` (the "disabled" one first), computed now."""
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
        rest = _Rest(
            used_before,
            used_later,
            later,
            none_lookup,
            none_lookup[ctx.nxt],  # (n,) cost where each would go
            int(np.count_nonzero(ctx.reach)),
            ctx.fixed_err + int(np.count_nonzero(ctx.go_wrong & ctx.reach)),
        )
        out, go_cost_sum = [], 0.0
        for slot, e in enumerate(self.problem.position_exits[j]):
            curve, go_cost_sum = self._option_curve(j, slot, e, ctx, rest)
            out.append(curve)
        self.n_cut_evals += 1
        none = Curve(
            j,
            -1,
            np.array([rest.err0]),
            np.array([ctx.fixed_cost + go_cost_sum]),
            np.zeros(0, dtype=np.float32),
            np.zeros(0, dtype=np.int64),
            (self.lo, self.hi),
        )
        return [none] + out

    def _option_curve(
        self, j: int, slot: int, e: int, ctx: Context, rest: _Rest
    ) -> tuple[Curve, float]:
        """Exit ``e``'s curve at ``j``, and the summed cost of its reaching samples going on."""
        costs = self.problem.costs
        bounds = self.bounds[e]
        leave_cost = float((rest.used_before | costs.needs[e]) @ costs.unit_costs)
        extra = (
            costs.needs[e] & ~rest.used_later
        ) @ costs.unit_costs  # what enabling e adds to going on
        o = self.order[e]
        if rest.n_reach == self.n:  # everyone reaches j
            idx, s, leave_wrong = o, self.sorted_scores[e], self.sorted_wrong[e]
        else:
            pos = np.flatnonzero(ctx.reach.take(o))  # reaching samples, best score first
            idx, s, leave_wrong = (
                o.take(pos),
                self.sorted_scores[e].take(pos),
                self.sorted_wrong[e].take(pos),
            )
        k = s.size
        stay_cost = rest.go_cost.take(idx)
        go_cost_sum = float(stay_cost.sum())
        if np.all(extra == extra[0]):  # the same wherever they go on
            stay_sum, leave_gain = go_cost_sum + extra[0] * k, leave_cost - extra[0]
        else:
            lookup = rest.none_lookup.copy()
            lookup[rest.later] += extra
            stay_cost = lookup.take(ctx.nxt.take(idx))
            stay_sum, leave_gain = float(stay_cost.sum()), leave_cost
        err_at = np.empty(k + 1, dtype=np.int64)  # totals as prefix sums of
        err_at[0] = rest.err0  # (leave here - go on)
        np.subtract(leave_wrong, ctx.go_wrong.view(np.int8).take(idx), out=err_at[1:])
        np.cumsum(err_at, out=err_at)
        cost_at = np.empty(k + 1)
        cost_at[0] = ctx.fixed_cost + stay_sum
        np.subtract(leave_gain, stay_cost, out=cost_at[1:])
        np.cumsum(cost_at, out=cost_at)
        # m lets the first m leave: blocked inside runs of equal scores (they stay together)
        blocked = np.flatnonzero(s[:-1] == s[1:]) + 1
        if k and not s[-1] > bounds[0]:
            blocked = np.append(blocked, k)
        self.n_cut_evals += k + 1 - blocked.size
        return Curve(j, slot, err_at, cost_at, s, blocked, bounds), go_cost_sum

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
                ctx = Context(reach_at[j], nxt, go_wrong, fixed[j][0], fixed[j][1])
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
                Context(remaining, after[j][0], after[j][1], err, cost),
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
