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

from .._validation import SearchError, check_scalar
from ..config import ExitConfig
from ..scores import score_range
from . import register_engine
from ._base import BaseEngine

__all__ = [
    "GlobalThreshold",
    "Geometric",
    "Greedy",
    "Circular",
    "select_exits",
    "snap_threshold",
    "geometric_thresholds",
]

_CHUNK = 16  # configurations evaluated between budget checks


# -- helpers shared by the baselines (and the exhaustive engine) ---------------------------------------
def snap_threshold(t: float, lo: float, hi: float) -> float:
    """The float32 value nearest ``t`` inside ``[lo, hi]`` (as a Python float)."""
    v = np.float32(min(max(float(t), lo), hi))
    if float(v) < lo:  # compare in float64, not float32
        v = np.nextafter(v, np.float32(np.inf))
    if float(v) > hi:
        v = np.nextafter(v, np.float32(-np.inf))
    return float(v)


def _score_bounds(problem) -> tuple[float, float]:
    return score_range(problem.score, problem.cache.n_classes)


def _position_indices(problem, positions) -> list[int]:
    """Indices into ``problem.positions`` of the chosen cache positions (all early ones for None)."""
    if positions is None:
        return list(range(problem.n_positions))
    if isinstance(positions, (int, np.integer)):
        positions = [positions]
    idx = []
    for p in positions:
        if (
            isinstance(p, bool)
            or not isinstance(p, (int, np.integer))
            or p not in problem.positions
        ):
            raise SearchError(
                f"`positions`: {p!r} is not an early exit position of this cache "
                f"(early positions: {problem.positions})"
            )
        idx.append(problem.positions.index(p))
    return sorted(set(idx))


def select_exits(problem, head=None, positions=None) -> list[int]:
    """One exit per chosen position (execution order) for a head choice.

    ``head``: None = the cheapest head type at each position (by standalone cost); an int = the
    i-th head type at each position (positions with fewer are skipped); a str = the head type of
    that name (positions without it are skipped). ``positions``: cache positions, None = all early.
    """
    exits = problem.cache.exits
    names = sorted({exits[e].head for ex in problem.position_exits for e in ex})
    if head is not None and (
        isinstance(head, bool) or not isinstance(head, (str, int, np.integer))
    ):
        raise SearchError(f"`head` must be None, a head type name or an index; got {head!r}")
    if isinstance(head, (int, np.integer)) and head < 0:
        raise SearchError(f"`head` == {head}, must be >= 0")
    out = []
    for j in _position_indices(problem, positions):
        ex = problem.position_exits[j]
        if head is None:
            out.append(min(ex, key=problem.costs.standalone_cost))
        elif isinstance(head, str):
            out += [e for e in ex if exits[e].head == head][:1]
        elif head < len(ex):
            out.append(ex[int(head)])
    if not out:
        raise SearchError(
            f"`head` {head!r} stands at none of the chosen positions; head types in this cache: {names}"
        )
    return out


def _head_choices(problem, head) -> list:
    """``head`` itself, or every head type name (in execution order) for ``head='each'``."""
    if head != "each":
        return [head]
    seen: dict[str, None] = {}  # head names, first seen first
    for ex in problem.position_exits:
        for e in ex:
            seen.setdefault(problem.cache.exits[e].head, None)
    return list(seen)


def _coarse_to_fine(n: int) -> list[int]:
    """``range(n)`` reordered ends first, then midpoints of ever finer halvings (a truncated prefix spans)."""
    if n <= 0:
        return []
    order, seen, step = [], set(), 1 << max(0, (n - 1).bit_length())
    while step >= 1:
        for i in [*range(0, n, step), n - 1]:
            if i not in seen:
                seen.add(i)
                order.append(i)
        step //= 2
    return order


def _evaluate_within_budget(
    engine, problem, budget, callback, configs: list[ExitConfig]
) -> tuple[list[ExitConfig], str]:
    """Evaluate ``configs`` coarse-to-fine in chunks until the budget runs out: the evaluated ones
    and a message saying how far it got (empty when all were)."""
    order = _coarse_to_fine(len(configs))
    done: list[ExitConfig] = []
    for a in range(0, len(order), _CHUNK):
        if budget.exhausted(problem):
            return done, f"budget exhausted after {len(done)} of {len(configs)} configurations"
        chunk = [configs[i] for i in order[a : a + _CHUNK]]
        problem.evaluate(chunk)
        done += chunk
        if callback is not None:
            callback(engine, problem)
    return done, ""


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
        lo, hi = _score_bounds(problem)
        configs = []
        for head in _head_choices(problem, self.head):
            exits = select_exits(problem, head, self.positions)
            pooled = np.sort(problem.scores[exits].ravel())
            probs = np.linspace(0.0, 1.0, self.n_thresholds)
            grid = pooled[np.floor(probs * (pooled.size - 1)).astype(np.int64)].astype(np.float64)
            grid = np.unique([snap_threshold(t, lo, hi) for t in [lo, hi, *grid]])
            configs += [problem.config(exits, (float(t),) * len(exits)) for t in grid]
        return _evaluate_within_budget(self, problem, budget, callback, configs)


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
        lo, hi = _score_bounds(problem)
        qs = np.geomspace(self.q_min, self.q_max, self.n_q)
        configs = []
        for head in _head_choices(problem, self.head):
            exits = select_exits(problem, head, self.positions)
            for q in qs:
                thr = geometric_thresholds(problem.scores[exits], float(q), lo, hi)
                configs.append(problem.config(exits, thr))
        return _evaluate_within_budget(self, problem, budget, callback, configs)


# -- greedy (DyCE onepass) and circular ---------------------------------------------------------------
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
        lo, hi = _score_bounds(problem)
        bounds = (
            [snap_threshold(v, lo, hi) for v in problem.scores.min(axis=1)],
            [snap_threshold(v, lo, hi) for v in problem.scores.max(axis=1)],
        )
        configs: list[ExitConfig] = []
        message = ""
        for i in _coarse_to_fine(len(lams)):
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
