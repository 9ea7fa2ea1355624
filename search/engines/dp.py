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

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._validation import SearchError
from ..config import ExitConfig
from ..front import non_dominated
from ..scores import score_range
from . import register_engine
from ._base import BaseEngine, Candidates

__all__ = ["DPEngine", "DPSolver", "Curve"]

_EPS = 1e-12


@dataclass
class Curve:
    """Exact objectives of every threshold cut of one option (head slot, or -1 = none) at position j.

    ``err`` (int counts) and ``cost`` (summed cost) are totals over the whole split; ``tau[m]`` is
    the threshold that lets exactly the first ``m`` reaching samples (by score) leave.
    """

    j: int
    slot: int
    err: np.ndarray
    cost: np.ndarray
    tau: np.ndarray
    current: int | None = None  # index of the cut the current state takes, on the current option's curve


def descending_order(scores: np.ndarray) -> np.ndarray:
    """Indices sorting float32 ``scores`` descending, ties in sample order: an exact O(n) radix sort.

    float32 bit patterns are mapped to uint32 keys that sort like the values (-0.0 made +0.0 first),
    then two stable 16-bit passes (numpy's radix sort) order them.
    """
    u = (np.asarray(scores, dtype=np.float32) + np.float32(0.0)).view(np.uint32)  # -0.0 ties with 0.0
    key = ~np.where(u >> 31, ~u, u | np.uint32(0x80000000))     # ascending key = descending score
    first = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
    second = np.argsort((key[first] >> 16).astype(np.uint16), kind="stable")
    return first[second].astype(np.int32)


class DPSolver:
    """Exact coordinate steps on one :class:`ExitProblem`; a state is ``(slots, taus)`` per position.

    ``slots[j]`` indexes ``problem.position_exits[j]`` (-1 = disabled); ``taus[j]`` its threshold.
    """

    def __init__(self, problem):
        self.problem = problem
        self.n, self.J = problem.n_samples, problem.n_positions
        self.final = problem.final_exit
        self.lo, self.hi = score_range(problem.score, problem.cache.n_classes)
        self.base_cost = problem.costs.base_cost
        self.order = {e: descending_order(problem.scores[e]) for ex in problem.position_exits for e in ex}
        self.flat_correct = problem.correct.reshape(-1)
        self.n_cut_evals = 0

    # -- configurations -----------------------------------------------------------------------
    def empty_state(self) -> tuple[np.ndarray, np.ndarray]:
        return np.full(self.J, -1, dtype=np.int64), np.full(self.J, self.hi, dtype=np.float64)

    def exit_of(self, j: int, slot: int) -> int:
        return self.problem.position_exits[j][slot]

    def enabled(self, slots) -> list[int]:
        return [self.exit_of(j, s) for j, s in enumerate(slots) if s >= 0]

    def cost_lookup(self, slots) -> np.ndarray:
        """Cost of leaving at each enabled exit (and the final one) under ``slots``; 0 elsewhere."""
        en = self.enabled(slots)
        lookup = np.zeros(self.problem.n_exits)
        lookup[en + [self.final]] = self.problem.costs.exit_costs(en)
        return lookup

    def state_of(self, config: ExitConfig) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`to_config`."""
        slots, taus = self.empty_state()
        for e, t in zip(config.exits, config.thresholds):
            j = self.problem.position_of_exit[e]
            slots[j], taus[j] = self.problem.position_exits[j].index(e), t
        return slots, taus

    def to_config(self, slots, taus) -> ExitConfig:
        pairs = [(self.exit_of(j, s), float(taus[j])) for j, s in enumerate(slots) if s >= 0]
        return ExitConfig(tuple(e for e, _ in pairs), tuple(t for _, t in pairs), self.problem.score)

    def _leave(self, j: int, slots, taus, remaining: np.ndarray, lookup: np.ndarray) -> tuple[int, float]:
        """Let the remaining samples that pass position j leave (``remaining`` is updated in place);
        return the errors and summed cost of those that left."""
        if slots[j] < 0:
            return 0, 0.0
        e = self.exit_of(j, slots[j])
        leave = remaining & (self.problem.scores[e] > taus[j])
        k = int(np.count_nonzero(leave))
        remaining &= ~leave
        return k - int(np.count_nonzero(leave & self.problem.correct[e])), lookup[e] * k

    def totals(self, slots, taus) -> tuple[int, float]:
        """Errors (count) and summed cost of a state on the whole split."""
        lookup = self.cost_lookup(slots)
        remaining = np.ones(self.n, dtype=bool)
        err, cost = 0, 0.0
        for j in range(self.J):
            de, dc = self._leave(j, slots, taus, remaining, lookup)
            err, cost = err + de, cost + dc
        k = int(np.count_nonzero(remaining))
        err += k - int(np.count_nonzero(remaining & self.problem.correct[self.final]))
        return err, cost + lookup[self.final] * k

    # -- one exact coordinate step ------------------------------------------------------------
    def curves(self, slots, taus, j: int, reach: np.ndarray, nxt: np.ndarray, fixed_err: int,
               fixed_cost: float) -> list[Curve]:
        """Every option at position ``j`` with all its threshold cuts, exactly.

        ``reach`` ``(n,)`` bool: samples arriving at j; ``nxt`` ``(n,)``: the exit each would leave at if
        it went on past j; ``fixed_err``/``fixed_cost``: totals of the samples that left before j.
        """
        out = []
        trial = np.array(slots)
        reach_idx = np.flatnonzero(reach)
        nxt_r = nxt[reach_idx]
        cont_err_none = int(reach_idx.size - np.count_nonzero(self.flat_correct[nxt_r * self.n + reach_idx]))
        trial[j] = -1
        lookup = self.cost_lookup(trial)
        out.append(Curve(j, -1, np.array([fixed_err + cont_err_none]),
                         np.array([fixed_cost + lookup[nxt_r].sum()]), np.array([self.hi]),
                         0 if slots[j] < 0 else None))
        for slot, e in enumerate(self.problem.position_exits[j]):
            trial[j] = slot
            lookup = self.cost_lookup(trial)
            o = self.order[e]
            idx = o[reach[o]]                                    # reaching samples, best score first
            cont = nxt[idx]
            cont_cost = lookup[cont]
            cont_wrong = ~self.flat_correct[cont * self.n + idx]
            delta = (~self.problem.correct[e][idx]).view(np.int8) - cont_wrong.view(np.int8)
            d_err = np.zeros(idx.size + 1, dtype=np.int64)
            np.cumsum(delta, out=d_err[1:])
            d_cost = np.zeros(idx.size + 1)
            np.cumsum(lookup[e] - cont_cost, out=d_cost[1:])
            s = self.problem.scores[e][idx]
            # cut m lets the first m leave: allowed where the score strictly drops (ties stay together)
            cuts = np.flatnonzero(s[:-1] != s[1:]) + 1
            tail = [idx.size] if idx.size and s[-1] > self.lo else []
            ms = np.concatenate([[0], cuts, tail]).astype(np.int64)
            cut_tau = np.concatenate([[self.hi], (s[cuts - 1].astype(np.float64) + s[cuts]) / 2,
                                      [(float(s[-1]) + self.lo) / 2] if tail else []])
            err = fixed_err + int(np.count_nonzero(cont_wrong)) + d_err[ms]
            cost = fixed_cost + cont_cost.sum() + d_cost[ms]
            current = None
            if slot == slots[j]:
                current = int(np.searchsorted(ms, np.count_nonzero(s > taus[j])))
            out.append(Curve(j, slot, err, cost, cut_tau, current))
            self.n_cut_evals += ms.size
        self.n_cut_evals += 1
        return out

    # -- sweeps ---------------------------------------------------------------------------------
    def sweep(self, slots, taus, select: Callable, *, backward: bool, harvest: Callable | None = None) -> bool:
        """One pass over all positions applying ``select(curves, slots, taus, j)``; True if anything changed."""
        scores = self.problem.scores
        changed = False
        if backward:
            lookup = self.cost_lookup(slots)
            reach_at, fixed = [], []
            remaining = np.ones(self.n, dtype=bool)
            err, cost = 0, 0.0
            for j in range(self.J):
                reach_at.append(remaining.copy())
                fixed.append((err, cost))
                de, dc = self._leave(j, slots, taus, remaining, lookup)
                err, cost = err + de, cost + dc
            nxt = np.full(self.n, self.final, dtype=np.int64)
            for j in reversed(range(self.J)):
                curves = self.curves(slots, taus, j, reach_at[j], nxt, *fixed[j])
                if harvest is not None:
                    harvest(curves, slots, taus)
                changed |= self._apply(select(curves, slots, taus, j), slots, taus, j)
                if slots[j] >= 0:
                    e = self.exit_of(j, slots[j])
                    nxt = np.where(scores[e] > taus[j], e, nxt)
            return changed
        nxt_at = [None] * self.J
        nxt = np.full(self.n, self.final, dtype=np.int64)
        for j in reversed(range(self.J)):
            nxt_at[j] = nxt
            if slots[j] >= 0:
                e = self.exit_of(j, slots[j])
                nxt = np.where(scores[e] > taus[j], e, nxt)
        remaining = np.ones(self.n, dtype=bool)
        err, cost = 0, 0.0
        for j in range(self.J):
            curves = self.curves(slots, taus, j, remaining, nxt_at[j], err, cost)
            if harvest is not None:
                harvest(curves, slots, taus)
            changed |= self._apply(select(curves, slots, taus, j), slots, taus, j)
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
        return int(cur.err[cur.current]), float(cur.cost[cur.current])

    def weighted_select(self, lam: float) -> Callable:
        """Selection rule minimising ``relative_cost + lam * error``; keeps the current option on ties."""
        scale_c, scale_e = 1.0 / (self.n * self.base_cost), lam / self.n

        def select(curves, slots, taus, j):
            e0, c0 = self.current_point(curves)
            best_val, best = c0 * scale_c + e0 * scale_e - _EPS, None
            for c in curves:
                val = c.cost * scale_c + c.err * scale_e
                m = int(np.argmin(val))
                if val[m] < best_val:
                    best_val, best = val[m], (c.slot, float(c.tau[m]))
            return best
        return select

    def solve(self, slots, taus, select: Callable, *, max_sweeps: int = 12, harvest=None) -> int:
        """Alternate backward and forward sweeps until one changes nothing; return sweeps run."""
        for i in range(max_sweeps):
            if not self.sweep(slots, taus, select, backward=(i % 2 == 0), harvest=harvest):
                return i + 1
        return max_sweeps


class _Archive:
    """Non-dominated threshold cuts seen during the sweeps, with enough to rebuild their configs."""

    def __init__(self, per_curve: int):
        self.per_curve = per_curve
        self.F: list[np.ndarray] = []
        self.refs: list[tuple] = []

    def __call__(self, curves: list[Curve], slots, taus) -> None:
        snap = (tuple(slots), tuple(taus))
        for c in curves:
            pick = np.arange(c.err.size)
            if pick.size > 8 * self.per_curve:  # bound the work: scan an even subset of the cuts
                pick = np.unique(np.linspace(0, pick.size - 1, 8 * self.per_curve).round().astype(np.int64))
            F = np.column_stack([c.err[pick], c.cost[pick]]).astype(np.float64)
            keep = non_dominated(F)
            if keep.size > self.per_curve:
                keep = keep[np.unique(np.linspace(0, keep.size - 1, self.per_curve).round().astype(int))]
            self.F.append(F[keep])
            self.refs.extend((snap, c.j, c.slot, float(c.tau[m])) for m in pick[keep])

    def front(self, solver: DPSolver) -> tuple[list[ExitConfig], np.ndarray]:
        if not self.F:
            return [], np.zeros((0, 2))
        F = np.concatenate(self.F)
        F = np.column_stack([F[:, 0] / solver.n, F[:, 1] / (solver.n * solver.base_cost)])
        idx = non_dominated(F)
        configs = []
        for i in idx:
            (slots, taus), j, slot, tau = self.refs[i]
            s, t = np.array(slots), np.array(taus)
            s[j], t[j] = slot, tau
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
    evenly along cost (None keeps all). ``subsample``: on splits larger than this, fit on a seeded
    random subsample of that many samples, then score the returned configurations exactly on the
    whole split (for ImageNet-train-sized caches; None fits on every sample).
    """

    name = "dp"

    def __init__(self, *, n_lams: int = 24, lams: list[float] | None = None, max_sweeps: int = 12,
                 per_curve: int = 64, max_configs: int | None = 256, subsample: int | None = None):
        self.n_lams = n_lams
        self.lams = lams
        self.max_sweeps = max_sweeps
        self.per_curve = per_curve
        self.max_configs = max_configs
        self.subsample = subsample

    def _run(self, problem, budget, rng, callback):
        if self.n_lams < 1 or self.max_sweeps < 1 or self.per_curve < 1:
            raise SearchError(f"dp: n_lams, max_sweeps and per_curve must be >= 1 (got {self.get_params()})")
        lams = np.asarray(self.lams if self.lams is not None else default_lams(self.n_lams), dtype=float)
        full = problem
        if self.subsample is not None and problem.n_samples > self.subsample:
            problem = full.take(np.sort(rng.choice(full.n_samples, self.subsample, replace=False)))
        solver = DPSolver(problem)
        archive = _Archive(self.per_curve)
        slots, taus = solver.empty_state()
        sweeps = 0
        for lam in sorted(lams, reverse=True):
            sweeps += solver.solve(slots, taus, solver.weighted_select(lam), max_sweeps=self.max_sweeps,
                                   harvest=archive)
            if callback is not None:
                callback(self, problem)
        full.n_evals += solver.n_cut_evals
        configs, F = archive.front(solver)
        if self.max_configs is not None and len(configs) > self.max_configs:
            keep = _thin(F, self.max_configs)
            configs, F = [configs[i] for i in keep], F[keep]
        message = f"{len(lams)} lams, {sweeps} sweeps, {solver.n_cut_evals} cuts scored"
        if problem is not full:
            F = full.evaluate(configs)
            message += f"; fitted on {problem.n_samples} of {full.n_samples} samples, scored on all"
        return Candidates(configs, F, message)


def _thin(F: np.ndarray, k: int) -> np.ndarray:
    """``k`` indices of a cost-sorted front spread evenly along relative cost, both ends kept."""
    targets = np.linspace(F[0, 1], F[-1, 1], k)
    idx = np.unique(np.searchsorted(F[:, 1], targets).clip(0, len(F) - 1))
    return idx
