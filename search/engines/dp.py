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

import numpy as np

from .._validation import SearchError, check_scalar
from . import register_engine
from ._base import BaseEngine, Candidates
from ._cap import check_max_exits, n_exit_positions
from ._dp_archive import Archive
from ._dp_curve import Curve, descending_order
from ._dp_solver import DPSolver

__all__ = ["DPEngine", "DPSolver", "Curve", "descending_order"]


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
        check_max_exits(self.max_exits, n_exit_positions(problem))
        solver = DPSolver(problem, max_exits=self.max_exits)
        archive = Archive(self.per_curve)
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
