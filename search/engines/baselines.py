"""Baselines every search is compared against (``docs/search.md``): ``global``, ``geometric``, ``greedy``
(and ``circular``).

- ``global``: every chosen position enabled with one head type, one threshold shared by all of them,
  swept over score quantiles (Shallow-Deep Networks / ZTW practice; DyCE's *samethres*).
- ``geometric``: MSDNet's budgeted-batch rule: with exits ``k = 1..K`` (final included),
  ``p_k ∝ q**k`` and ``sum p_k = 1``; exit k's threshold makes ``p_k`` of all samples leave there,
  taken from the samples still present (the largest scores leave first), for q over a grid.
- ``greedy``: DyCE's *onepass*: per trade-off weight ``lam``, minimise
  ``J = lam * error + (1 - lam) * relative_cost`` (error = 1 - accuracy, cost relative to the base)
  position by position, front to back, later positions disabled; per position try every head type
  with a bounded scalar minimiser (``scipy.optimize.minimize_scalar(method='bounded')``) over its
  threshold in ``[min score, max score]`` of that exit, and "none"; keep the best; no backtracking.
- ``circular``: DyCE's best-improvement repeat over all positions, started from the onepass result.

Thresholds are always float32 values (the dtype of the scores), so ``score > threshold`` reads the
same in float32 and in float64.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_scalar
from . import register_engine
from ._base import BaseEngine
from ._baseline_common import (
    evaluate_within_budget,
    head_choices,
    score_bounds,
    select_exits,
    snap_threshold,
)
from ._greedy import Circular, Greedy

__all__ = [
    "GlobalThreshold",
    "Geometric",
    "Greedy",
    "Circular",
    "select_exits",
    "snap_threshold",
    "geometric_thresholds",
]


# -- global -------------------------------------------------------------------------------------------
@register_engine
class GlobalThreshold(BaseEngine):
    """One threshold shared by all enabled exits, swept over ``n_thresholds`` score quantiles.

    ``head``: see :func:`select_exits`, or ``"each"`` to sweep every head type in turn.
    ``positions``: cache positions to enable (None = every early position). The grid: quantiles of
    the pooled scores of the enabled exits on the problem's split, the lower score bound (everyone
    leaves at the first exit) and the upper bound (nobody leaves early).
    """

    name = "global"

    def __init__(self, *, n_thresholds: int = 100, head=None, positions=None):
        self.n_thresholds = n_thresholds
        self.head = head
        self.positions = positions

    def _run(self, problem, budget, rng, callback):
        check_scalar(self.n_thresholds, "n_thresholds", min_val=1, integer=True)
        lo, hi = score_bounds(problem)
        configs = []
        for head in head_choices(problem, self.head):
            exits = select_exits(problem, head, self.positions)
            pooled = np.sort(problem.scores[exits].ravel())
            probs = np.linspace(0.0, 1.0, self.n_thresholds)
            grid = pooled[np.floor(probs * (pooled.size - 1)).astype(np.int64)].astype(np.float64)
            grid = np.unique([snap_threshold(t, lo, hi) for t in [lo, hi, *grid]])
            configs += [problem.config(exits, (float(t),) * len(exits)) for t in grid]
        return evaluate_within_budget(self, problem, budget, callback, configs)


# -- geometric ----------------------------------------------------------------------------------------
def geometric_thresholds(scores: np.ndarray, q: float, lo: float, hi: float) -> list[float]:
    """MSDNet budgeted-batch thresholds for the exits whose scores are the rows of ``scores``.

    ``scores`` ``(n_enabled, n_samples)``; with ``K = n_enabled + 1`` exits (final included),
    ``p_k = q**k / sum_j q**j`` (k = 1..K). Exit k's threshold is the score of the samples still
    present that lets the cumulative count leaving by exit k reach ``round(n * sum_{j<=k} p_j)``
    (ties at the threshold stay, so a little fewer may leave).
    """
    n_enabled, n = scores.shape
    k = np.arange(1, n_enabled + 2, dtype=np.float64)
    logp = k * np.log(q)
    p = np.exp(logp - logp.max())
    target = np.rint(n * np.cumsum(p / p.sum())).astype(np.int64)
    present = np.ones(n, dtype=bool)
    left, thresholds = 0, []
    for i in range(n_enabled):
        m = int(target[i]) - left  # how many should leave here
        s = np.sort(scores[i][present])[::-1]  # still present, largest first
        if m <= 0 or s.size == 0:
            t = snap_threshold(hi, lo, hi)
        elif m >= s.size:
            t = snap_threshold(lo, lo, hi)
        else:
            t = snap_threshold(s[m], lo, hi)  # scores > s[m] leave: at most m of them
        thresholds.append(t)
        leave = present & (scores[i] > np.float32(t))
        left += int(np.count_nonzero(leave))
        present &= ~leave
    return thresholds


@register_engine
class Geometric(BaseEngine):
    """MSDNet budgeted batch: exit fractions ``∝ q**k`` for ``n_q`` values of q, geometric in ``[q_min, q_max]``.

    q < 1 sends most samples out early (cheap), q > 1 keeps most to the end (accurate).
    ``head``/``positions`` choose the enabled exits as for ``global`` (``head='each'`` sweeps head types).
    """

    name = "geometric"

    def __init__(
        self, *, n_q: int = 41, q_min: float = 0.25, q_max: float = 4.0, head=None, positions=None
    ):
        self.n_q = n_q
        self.q_min = q_min
        self.q_max = q_max
        self.head = head
        self.positions = positions

    def _run(self, problem, budget, rng, callback):
        check_scalar(self.n_q, "n_q", min_val=1, integer=True)
        check_scalar(self.q_min, "q_min", min_val=1e-6)
        check_scalar(self.q_max, "q_max", min_val=self.q_min)
        lo, hi = score_bounds(problem)
        qs = np.geomspace(self.q_min, self.q_max, self.n_q)
        configs = []
        for head in head_choices(problem, self.head):
            exits = select_exits(problem, head, self.positions)
            for q in qs:
                thr = geometric_thresholds(problem.scores[exits], float(q), lo, hi)
                configs.append(problem.config(exits, thr))
        return evaluate_within_budget(self, problem, budget, callback, configs)
