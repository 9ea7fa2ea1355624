"""Constrained queries answered directly on one split: "cheapest within X of the base accuracy" and
"most accurate within a cost budget" (``search.pareto_testing`` certifies them on unseen data).

Both constrained queries bisect the trade-off weight lam of the exact DP, then repair and polish
with exact *constrained* coordinate steps: at each position, among every option and threshold cut,
take the cheapest (or most accurate) one that keeps the constraint on the search split. Each such
step keeps the constraint and never makes the objective worse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import SearchError, check_scalar
from .config import ExitConfig
from .engines._cap import check_max_exits, n_exit_positions
from .engines.dp import DPEngine, DPSolver
from .front import Front
from .problem import Evaluation, ExitProblem
from .units import check_drop_points, points_to_fraction

__all__ = ["Answer", "cheapest_within_drop", "most_accurate_within_budget"]


@dataclass(frozen=True)
class Answer:
    """A configuration chosen for a query and what it does on the split it was chosen on."""

    config: ExitConfig
    evaluation: Evaluation
    query: str


def _max_errors(problem: ExitProblem, max_drop: float) -> int:
    base_err = problem.n_samples - int(np.count_nonzero(problem.correct[problem.final_exit]))
    return base_err + int(np.floor(max_drop * problem.n_samples + 1e-9))


def _polish(solver: DPSolver, slots, taus, feasible, key, max_sweeps: int = 20) -> None:
    """Constrained exact coordinate sweeps: move only to feasible cuts with a strictly smaller key.

    ``feasible(err, cost)`` and ``key(err, cost) -> (primary, secondary)`` work on arrays.
    """

    def select(curves, slots_, taus_, j):
        e0, c0 = solver.current_point(curves)
        p0, s0 = key(np.array([e0]), np.array([c0]))
        best_key, best = (p0[0], s0[0]), None
        for c in curves:
            ok = np.flatnonzero(feasible(c.err, c.cost))
            if ok.size == 0:
                continue
            prim, sec = key(c.err[ok], c.cost[ok])
            m = np.lexsort((sec, prim))[0]
            if (prim[m], sec[m]) < best_key:
                best_key, best = (prim[m], sec[m]), (c.slot, float(c.tau[ok[m]]))
        return best

    for i in range(max_sweeps):
        if not solver.sweep(slots, taus, select, backward=(i % 2 == 0)):
            return


def _front_candidates(solver: DPSolver, front: Front) -> list[tuple]:
    """States of ``front``'s configurations with the error count and summed cost its ``F`` records."""
    n, base_cost = solver.problem.n_samples, solver.problem.costs.base_cost
    return [
        (*solver.state_of(c), int(round(F[0] * n)), float(F[1] * n * base_cost))
        for c, F in zip(front.configs, front.F, strict=True)
    ]


def _same_totals(a, b) -> bool:
    return a[0] == b[0] and abs(a[1] - b[1]) <= 1e-9 * max(abs(a[1]), 1.0)


def _best_feasible(cands: list[tuple], feasible, rank) -> tuple | None:
    ok = [r for r in cands if feasible(r[2], r[3])]
    return min(ok, key=rank) if ok else None


def _bisect(solver: DPSolver, solve_at, feasible, n_bisect: int, feasible_at_high: bool) -> list:
    """The base model, the weighted optimum at the feasible end of log lam and, when that is feasible,
    the optima ``n_bisect`` bisection steps visit: ``(slots, taus, err, cost)`` each."""
    ends = {"low": np.log(0.01), "high": np.log(1e5)}
    good, bad = ("high", "low") if feasible_at_high else ("low", "high")
    cands = [(*solver.empty_state(), *solver.totals(*solver.empty_state()))]
    ok_end = solve_at(ends[good], cands[0][:2]) if n_bisect else None
    if ok_end is not None:
        cands.append(ok_end)
    g, b = ends[good], ends[bad]
    if ok_end is not None and feasible(ok_end[2], ok_end[3]):
        state = ok_end
        for _ in range(n_bisect):
            mid = (g + b) / 2
            r = solve_at(mid, state[:2])
            cands.append(r)
            if feasible(r[2], r[3]):
                g, state = mid, r
            else:
                b = mid
    return cands


def _bisect_then_polish(
    problem: ExitProblem,
    feasible,
    key,
    n_bisect: int,
    *,
    feasible_at_high: bool,
    front: Front | None,
    max_exits: int | None = None,
):
    """Bisect log lam for the best feasible weighted optimum, then polish it with constrained steps.

    Feasibility is monotone in lam: for a drop limit it holds at large lam (accurate end), for a
    cost budget at small lam (cheap end); the bisection keeps a feasible end and moves the other.
    The configurations of ``front`` (a dp front when None) are candidates too; with ``n_bisect = 0``
    they (and the base model) are the only ones, and no weighted problem is solved. ``max_exits`` caps the
    exits every candidate and step enables (front configurations above it are left out).
    """
    check_max_exits(max_exits, n_exit_positions(problem))
    solver = DPSolver(problem, max_exits=max_exits)
    if front is None:
        front = DPEngine(max_exits=max_exits).run(problem)
    if max_exits is not None:
        front = front.take([i for i, c in enumerate(front.configs) if len(c.exits) <= max_exits])

    def solve_at(log_lam, state):
        s, t = state[0].copy(), state[1].copy()
        solver.solve(s, t, solver.weighted_select(float(np.exp(log_lam))))
        return (s, t, *solver.totals(s, t))

    def rank(r):
        p, q = key(np.array([r[2]]), np.array([r[3]]))
        return (p[0], q[0])

    cands = _bisect(solver, solve_at, feasible, n_bisect, feasible_at_high)
    best = _best_feasible(cands + _front_candidates(solver, front), feasible, rank)
    if best is not None and not _same_totals(solver.totals(best[0], best[1]), best[2:]):
        # the front's objectives were not this problem's: score every front configuration here
        best = _best_feasible(
            cands + [(*st, *solver.totals(*st)) for st in map(solver.state_of, front.configs)],
            feasible,
            rank,
        )
    if best is None:
        return None
    s, t = best[0].copy(), best[1].copy()
    _polish(solver, s, t, feasible, key)
    return solver.to_config(s, t)


def cheapest_within_drop(
    problem: ExitProblem,
    max_drop: float,
    *,
    front: Front | None = None,
    n_bisect: int = 14,
    max_exits: int | None = None,
) -> Answer:
    """The cheapest configuration whose accuracy on ``problem``'s split is >= base - ``max_drop``.

    ``max_drop`` is in points of top-1 accuracy (0.5 = half a point; ``search.units``). The base model always
    qualifies. ``front``: configurations (of this problem) to start from besides the lam bisection;
    ``max_exits``: at most that many exits enabled.
    """
    points = check_drop_points(max_drop)
    return _cheapest_within_drop(
        problem, points_to_fraction(points), front=front, n_bisect=n_bisect, max_exits=max_exits
    )


def _cheapest_within_drop(
    problem: ExitProblem,
    max_drop: float,
    *,
    front: Front | None = None,
    n_bisect: int = 14,
    max_exits: int | None = None,
) -> Answer:
    """:func:`cheapest_within_drop` with ``max_drop`` a fraction, trusted (checked once by the caller)."""
    limit = _max_errors(problem, max_drop)
    config = _bisect_then_polish(
        problem,
        lambda e, c: e <= limit,
        lambda e, c: (c, e),
        n_bisect,
        feasible_at_high=True,
        front=front,
        max_exits=max_exits,
    )
    return Answer(
        config, problem.evaluate_one(config), f"cheapest within {100 * max_drop:g} points drop"
    )


def most_accurate_within_budget(
    problem: ExitProblem,
    budget: float,
    *,
    front: Front | None = None,
    n_bisect: int = 14,
    max_exits: int | None = None,
) -> Answer:
    """The most accurate configuration with relative cost <= ``budget`` on ``problem``'s split (at most
    ``max_exits`` exits enabled when given)."""
    check_scalar(budget, "budget", min_val=0.0)
    return _most_accurate_within_budget(
        problem, budget, front=front, n_bisect=n_bisect, max_exits=max_exits
    )


def _most_accurate_within_budget(
    problem: ExitProblem,
    budget: float,
    *,
    front: Front | None = None,
    n_bisect: int = 14,
    max_exits: int | None = None,
) -> Answer:
    """:func:`most_accurate_within_budget` with ``budget`` trusted (checked once by the caller)."""
    limit = budget * problem.n_samples * problem.costs.base_cost * (1 + 1e-12)
    config = _bisect_then_polish(
        problem,
        lambda e, c: c <= limit,
        lambda e, c: (e, c),
        n_bisect,
        feasible_at_high=False,
        front=front,
        max_exits=max_exits,
    )
    if config is None:
        if not problem.positions:
            raise SearchError(
                f"no configuration meets relative cost <= {budget}: the cache has no early exits, "
                "so the base model (relative cost 1) is the only answer; ask --budget 1 or more"
            )
        cheapest = min(
            problem.costs.standalone_cost(e) for ex in problem.position_exits for e in ex
        )
        raise SearchError(
            f"no configuration meets relative cost <= {budget}: the cheapest reachable is "
            f"{cheapest / problem.costs.base_cost:.4f} (everything leaving at the cheapest exit)"
        )
    return Answer(
        config, problem.evaluate_one(config), f"most accurate within relative cost {budget}"
    )
