"""``exhaustive``: every configuration on a threshold grid, for small problems (the ground truth in tests).

Per early exit the grid holds ``levels`` thresholds: the lower score bound (every sample still
present leaves) and the score quantiles ``i / levels`` (i = 1..levels-1) of that exit on the
problem's split, without values at or above the exit's largest score (nobody would leave: "none" is
never worse). ``levels=None`` takes every distinct score instead, which makes the enumeration exact:
any configuration is matched (every sample leaves at the same exit) or beaten by one on the grid. Per
position the choice is "none" or (head type, level); all combinations are counted and evaluated with
a vectorised fast path (the last position's options in one numpy pass per prefix).
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import SearchError, check_scalar
from ..config import ExitConfig
from ..front import non_dominated
from ..scores import score_range
from . import register_engine
from ._base import BaseEngine
from ._baseline_common import snap_threshold
from ._cap import check_max_exits, n_exit_positions

__all__ = ["Exhaustive", "threshold_levels"]


def threshold_levels(scores: np.ndarray, levels: int | None, lo: float, hi: float) -> np.ndarray:
    """Ascending float32 thresholds for one exit's ``scores`` ``(n_samples,)`` (see the module docstring)."""
    s = np.sort(np.asarray(scores, dtype=np.float32))
    if levels is None:
        cand = np.unique(s)
    else:
        probs = np.arange(1, levels) / levels
        cand = s[np.floor(probs * (s.size - 1)).astype(np.int64)]
    c64 = cand.astype(np.float64)
    cand = cand[(c64 >= lo) & (c64 <= hi)]  # float32 rounding may step just outside the range
    grid = np.unique(
        np.concatenate([np.array([snap_threshold(lo, lo, hi)], dtype=np.float32), cand])
    )
    return grid[grid < s[-1]]


class _Enumerator:
    """Depth-first over positions; the last position's options are evaluated in one pass per prefix."""

    def __init__(self, problem, grids: list[np.ndarray]):
        self.pb, self.grids = problem, grids
        costs = problem.costs
        self.unit_costs, self.needs, self.final = costs.unit_costs, costs.needs, problem.final_exit
        self.norm = problem.n_samples * costs.base_cost
        # per option of each position: (exit, threshold) or None, flattened: option 0 = none
        self.options = [
            [None] + [(e, t) for e in ex for t in grids[e]] for ex in problem.position_exits
        ]
        last = problem.position_exits[-1]
        self.order = {e: np.argsort(problem.scores[e], kind="stable") for e in last}
        self.cut = {
            e: np.searchsorted(problem.scores[e][self.order[e]], grids[e], side="right")
            for e in last
        }
        self.F: list[np.ndarray] = []
        self.choice: list[np.ndarray] = []

    def count(self) -> int:
        return math.prod(len(o) for o in self.options)

    def run(self, callback) -> tuple[np.ndarray, np.ndarray]:
        n = self.pb.n_samples
        state = (np.ones(n, dtype=bool), 0, 0.0, np.zeros(self.unit_costs.shape[0], dtype=bool))
        self._visit(0, (), state, callback)
        return np.concatenate(self.F), np.concatenate(self.choice)

    def _visit(self, j: int, prefix: tuple, state, callback) -> None:
        if j == len(self.options) - 1:
            self._last(prefix, state)
            return
        present, n_correct, cost, used = state
        pb = self.pb
        for i, opt in enumerate(self.options[j]):
            if opt is None:
                self._visit(j + 1, prefix + (i,), state, None)
            else:
                e, t = opt
                u = used | self.needs[e]
                leave = present & (pb.scores[e] > t)
                n_leave = int(np.count_nonzero(leave))
                child = (
                    present & ~leave,
                    n_correct + int(np.count_nonzero(leave & pb.correct[e])),
                    cost + n_leave * float(self.unit_costs[u].sum()),
                    u,
                )
                self._visit(j + 1, prefix + (i,), child, None)
            if callback is not None:
                callback()

    def _last(self, prefix: tuple, state) -> None:
        present, n_correct, cost, used = state
        pb, fin = self.pb, self.final
        final_correct = pb.correct[fin]
        stay_cost = float(self.unit_costs[used | self.needs[fin]].sum())
        rows_F = [
            (
                (1.0 - (n_correct + np.count_nonzero(present & final_correct)) / pb.n_samples),
                (cost + np.count_nonzero(present) * stay_cost) / self.norm,
            )
        ]
        F = [np.asarray(rows_F, dtype=np.float64)]
        for e in self.pb.position_exits[-1]:
            o, cut = self.order[e], self.cut[e]
            u = used | self.needs[e]
            c_leave, c_final = (
                float(self.unit_costs[u].sum()),
                float(self.unit_costs[u | self.needs[fin]].sum()),
            )
            cs = [
                np.concatenate([[0], np.cumsum(a[o], dtype=np.int64)])
                for a in (present, present & pb.correct[e], present & final_correct)
            ]
            n_stay, n_leave = cs[0][cut], cs[0][-1] - cs[0][cut]
            correct = n_correct + (cs[1][-1] - cs[1][cut]) + cs[2][cut]
            F.append(
                np.column_stack(
                    [
                        1.0 - correct / pb.n_samples,
                        (cost + n_leave * c_leave + n_stay * c_final) / self.norm,
                    ]
                )
            )
        front = np.concatenate(F)
        choice = np.empty((front.shape[0], len(self.options)), dtype=np.int32)
        choice[:, :-1] = prefix
        choice[:, -1] = np.arange(front.shape[0])
        self.F.append(front)
        self.choice.append(choice)
        self.pb.n_evals += front.shape[0]

    def decode(self, row) -> ExitConfig:
        picked = [self.options[j][i] for j, i in enumerate(row) if i > 0]
        return self.pb.config((e for e, _ in picked), (t for _, t in picked))


@register_engine
class Exhaustive(BaseEngine):
    """Evaluate every configuration on a ``levels``-per-exit threshold grid (None: every distinct score).

    Refuses problems with more than ``max_configs`` combinations. Ignores the budget (like ``dp``) and
    reports every combination as an evaluation. ``max_exits`` keeps only the combinations enabling at most
    that many exits (None: all).
    """

    name = "exhaustive"

    def __init__(
        self, *, levels: int | None = 32, max_configs: int = 2_000_000, max_exits: int | None = None
    ):
        self.levels = levels
        self.max_configs = max_configs
        self.max_exits = max_exits

    def _run(self, problem, budget, rng, callback):
        if self.levels is not None:
            check_scalar(self.levels, "levels", min_val=1, integer=True)
        check_scalar(self.max_configs, "max_configs", min_val=1, integer=True)
        check_max_exits(self.max_exits, n_exit_positions(problem))
        lo, hi = score_range(problem.score, problem.cache.n_classes)
        grids = [
            threshold_levels(problem.scores[e], self.levels, lo, hi)
            for e in range(problem.n_exits - 1)
        ]
        enum = _Enumerator(problem, grids)
        total = enum.count()
        if total > self.max_configs:
            sizes = " x ".join(str(len(o)) for o in enum.options)
            raise SearchError(
                f"exhaustive: {problem.n_positions} positions with {sizes} options each make "
                f"{total:.3g} configurations, more than max_configs={self.max_configs}; "
                "use fewer levels or the dp engine"
            )
        F, choice = enum.run(None if callback is None else (lambda: callback(self, problem)))
        if self.max_exits is not None:
            within = np.count_nonzero(choice > 0, axis=1) <= self.max_exits
            F, choice = F[within], choice[within]
        keep = non_dominated(F)
        grid = "every distinct score" if self.levels is None else f"{self.levels} levels per exit"
        return [enum.decode(choice[i]) for i in keep], f"{total} configurations enumerated ({grid})"
