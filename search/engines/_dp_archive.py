"""The dp engine's archive: the non-dominated threshold cuts seen during the sweeps, as a front."""

from __future__ import annotations

import numpy as np

from ..config import ExitConfig
from ..front import non_dominated
from ._dp_curve import Curve
from ._dp_solver import DPSolver

__all__ = ["Archive"]


def _spread(size: int, k: int) -> np.ndarray:
    """``k`` distinct indices spread evenly over ``range(size)`` (all of them when ``size <= k``)."""
    if size <= k:
        return np.arange(size)
    if k == 1:
        return np.zeros(1, dtype=np.int64)
    # round(i * (size - 1) / (k - 1)), halves to even as np.round, in integers; steps above 1: distinct
    q, r = np.divmod(np.arange(k, dtype=np.int64) * (size - 1), k - 1)
    return q + ((2 * r > k - 1) | ((2 * r == k - 1) & (q % 2 == 1)))


class Archive:
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


def _thin(F: np.ndarray, k: int) -> np.ndarray:
    """``k`` indices of a cost-sorted front spread evenly along relative cost, both ends kept."""
    targets = np.linspace(F[0, 1], F[-1, 1], k)
    idx = np.searchsorted(F[:, 1], targets).clip(0, len(F) - 1)  # sorted: drop repeats
    return idx[np.concatenate([[True], idx[1:] != idx[:-1]])]
