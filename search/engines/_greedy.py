"""The greedy baselines (``docs/search.md``): ``greedy``, DyCE's *onepass* (per trade-off weight, position
by position, front to back, no backtracking), and ``circular``, DyCE's best-improvement repeat over all
positions started from the onepass result (see :mod:`search.engines.baselines`)."""

from __future__ import annotations

import numpy as np

from .._validation import check_scalar
from ..config import ExitConfig
from . import register_engine
from ._base import BaseEngine
from ._baseline_common import coarse_to_fine, score_bounds, snap_threshold

__all__ = ["Circular", "Greedy"]


class _Prefix:
    """Enabled exits of the positions decided so far, with what they already account for.

    ``objectives(tail)`` evaluates ``prefix + tail`` (``tail`` = (exit, threshold) pairs of later
    positions, in order) on the problem's split in O(n_samples * len(tail)), counting each call as
    one evaluation of the problem.
    """

    def __init__(self, problem):
        self.problem = problem
        self.exits: list[int] = []
        self.thresholds: list[float] = []
        self.present = np.ones(problem.n_samples, dtype=bool)
        self.n_correct = 0
        self.cost = 0.0  # summed cost of the samples that left
        self.used = np.zeros(problem.costs.unit_costs.shape[0], dtype=bool)

    def _leave(self, state, e: int, t: float):
        """``state`` = (present, n_correct, cost, used) after exit ``e`` at threshold ``t``."""
        pb = self.problem
        present, n_correct, cost, used = state
        used = used | pb.costs.needs[e]
        leave = present & (pb.scores[e] > np.float32(t))
        return (
            present & ~leave,
            n_correct + int(np.count_nonzero(leave & pb.correct[e])),
            cost + np.count_nonzero(leave) * float(pb.costs.unit_costs[used].sum()),
            used,
        )

    def objectives(self, tail=()) -> tuple[float, float]:
        """``(error, relative_cost)`` of the prefix followed by ``tail``, then the final exit."""
        pb = self.problem
        pb.n_evals += 1
        state = (self.present, self.n_correct, self.cost, self.used)
        for e, t in tail:
            state = self._leave(state, e, t)
        present, n_correct, cost, used = self._leave(state, pb.final_exit, -np.inf)
        return 1.0 - n_correct / pb.n_samples, cost / pb.n_samples / pb.costs.base_cost

    def push(self, e: int, t: float) -> None:
        self.present, self.n_correct, self.cost, self.used = self._leave(
            (self.present, self.n_correct, self.cost, self.used), e, t
        )
        self.exits.append(e)
        self.thresholds.append(t)


def _best_option(problem, exits_j, J, lo_all, hi_all, xatol: float):
    """The best of "none" and every head type of one position with its bounded-minimiser threshold:
    ``(value, (exit, threshold) or None)``. ``J(option)`` scores an option."""
    from scipy.optimize import minimize_scalar

    best_val, best = J(None), None
    for e in exits_j:
        lo, hi = float(lo_all[e]), float(hi_all[e])
        if hi > lo:
            res = minimize_scalar(
                lambda t, e=e: J((e, t)),
                bounds=(lo, hi),
                method="bounded",
                options={"xatol": xatol},
            )
            t = snap_threshold(res.x, lo, hi)
        else:
            t = lo
        val = J((e, t))
        if val < best_val:
            best_val, best = val, (e, t)
    return best_val, best


@register_engine
class Greedy(BaseEngine):
    """DyCE *onepass* per ``lam`` in ``[lam_min, lam_max]`` step ``lam_step`` (reference: 0.5..1.0 by 0.01).

    Objective ``J = lam * (1 - accuracy) + (1 - lam) * relative_cost``. ``xatol`` is the bounded
    minimiser's threshold tolerance. Stops early (returning what it has) when the budget runs out;
    lam values are visited coarse-to-fine so a cut-short run still spans the range.
    """

    name = "greedy"

    def __init__(
        self,
        *,
        lam_min: float = 0.5,
        lam_max: float = 1.0,
        lam_step: float = 0.01,
        xatol: float = 1e-4,
    ):
        self.lam_min = lam_min
        self.lam_max = lam_max
        self.lam_step = lam_step
        self.xatol = xatol

    def _lams(self) -> np.ndarray:
        check_scalar(self.lam_min, "lam_min", min_val=0.0, max_val=1.0)
        check_scalar(self.lam_max, "lam_max", min_val=self.lam_min, max_val=1.0)
        check_scalar(self.lam_step, "lam_step", min_val=1e-6)
        check_scalar(self.xatol, "xatol", min_val=1e-12)
        n = int(np.floor((self.lam_max - self.lam_min) / self.lam_step + 1e-9)) + 1
        return np.round(self.lam_min + self.lam_step * np.arange(n), 12)

    def _run(self, problem, budget, rng, callback):
        lams = self._lams()
        lo, hi = score_bounds(problem)
        bounds = (
            [snap_threshold(v, lo, hi) for v in problem.scores.min(axis=1)],
            [snap_threshold(v, lo, hi) for v in problem.scores.max(axis=1)],
        )
        configs: list[ExitConfig] = []
        message = ""
        for i in coarse_to_fine(len(lams)):
            if budget.exhausted(problem):
                message = f"budget exhausted after {len(configs)} of {len(lams)} lam values"
                break
            configs.append(self._per_lam(problem, float(lams[i]), bounds, budget))
            if callback is not None:
                callback(self, problem)
        return configs, message

    def _onepass(self, problem, lam: float, bounds, budget) -> ExitConfig:
        prefix = _Prefix(problem)

        def J(option) -> float:
            err, cost = prefix.objectives(() if option is None else (option,))
            return lam * err + (1.0 - lam) * cost

        for exits_j in problem.position_exits:
            if budget.exhausted(problem):
                break
            _, best = _best_option(problem, exits_j, J, bounds[0], bounds[1], self.xatol)
            if best is not None:
                prefix.push(*best)
        return problem.config(prefix.exits, prefix.thresholds)

    def _per_lam(self, problem, lam: float, bounds, budget) -> ExitConfig:
        return self._onepass(problem, lam, bounds, budget)


@register_engine
class Circular(Greedy):
    """DyCE *circular*: from the onepass result, repeat the best single-position move (another head
    type with its minimised threshold, or "none") over all positions until none improves ``J`` or
    ``max_rounds`` moves were made. Same options as ``greedy``; much slower on many positions."""

    name = "circular"

    def __init__(
        self,
        *,
        lam_min: float = 0.5,
        lam_max: float = 1.0,
        lam_step: float = 0.01,
        xatol: float = 1e-4,
        max_rounds: int = 50,
    ):
        super().__init__(lam_min=lam_min, lam_max=lam_max, lam_step=lam_step, xatol=xatol)
        self.max_rounds = max_rounds

    def _per_lam(self, problem, lam: float, bounds, budget) -> ExitConfig:
        check_scalar(self.max_rounds, "max_rounds", min_val=0, integer=True)
        config = self._onepass(problem, lam, bounds, budget)
        chosen = {
            problem.position_of_exit[e]: (e, t)
            for e, t in zip(config.exits, config.thresholds, strict=True)
        }
        current = None
        for _ in range(self.max_rounds):
            best_val, best_move = np.inf, None
            for j, exits_j in enumerate(problem.position_exits):
                if budget.exhausted(problem):
                    break
                prefix = _Prefix(problem)
                for k in sorted(chosen):
                    if k < j:
                        prefix.push(*chosen[k])
                suffix = tuple(chosen[k] for k in sorted(chosen) if k > j)

                def J(option, prefix=prefix, suffix=suffix) -> float:
                    err, cost = prefix.objectives((() if option is None else (option,)) + suffix)
                    return lam * err + (1.0 - lam) * cost

                if current is None:
                    current = J(chosen.get(j))
                val, option = _best_option(problem, exits_j, J, bounds[0], bounds[1], self.xatol)
                if val < best_val:
                    best_val, best_move = val, (j, option)
            if best_move is None or current is None or not best_val < current - 1e-12:
                break
            j, option = best_move
            if option is None:
                chosen.pop(j, None)
            else:
                chosen[j] = option
            current = best_val
        picked = [chosen[k] for k in sorted(chosen)]
        return problem.config((e for e, _ in picked), (t for _, t in picked))
