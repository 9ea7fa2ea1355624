"""What the baselines and the exhaustive engine share: thresholds snapped to float32, the exits a
search may use (``select_exits``), coarse-to-fine orders and configurations evaluated within a budget."""

from __future__ import annotations

import numpy as np

from .._validation import SearchError
from ..config import ExitConfig
from ..scores import score_range

__all__ = [
    "coarse_to_fine",
    "evaluate_within_budget",
    "head_choices",
    "position_indices",
    "score_bounds",
    "select_exits",
    "snap_threshold",
]

_CHUNK = 16  # configurations evaluated between budget checks


def snap_threshold(t: float, lo: float, hi: float) -> float:
    """The float32 value nearest ``t`` inside ``[lo, hi]`` (as a Python float)."""
    v = np.float32(min(max(float(t), lo), hi))
    if float(v) < lo:  # compare in float64, not float32
        v = np.nextafter(v, np.float32(np.inf))
    if float(v) > hi:
        v = np.nextafter(v, np.float32(-np.inf))
    return float(v)


def score_bounds(problem) -> tuple[float, float]:
    return score_range(problem.score, problem.cache.n_classes)


def position_indices(problem, positions) -> list[int]:
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
    for j in position_indices(problem, positions):
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


def head_choices(problem, head) -> list:
    """``head`` itself, or every head type name (in execution order) for ``head='each'``."""
    if head != "each":
        return [head]
    seen: dict[str, None] = {}  # head names, first seen first
    for ex in problem.position_exits:
        for e in ex:
            seen.setdefault(problem.cache.exits[e].head, None)
    return list(seen)


def coarse_to_fine(n: int) -> list[int]:
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


def evaluate_within_budget(
    engine, problem, budget, callback, configs: list[ExitConfig]
) -> tuple[list[ExitConfig], str]:
    """Evaluate ``configs`` coarse-to-fine in chunks until the budget runs out: the evaluated ones
    and a message saying how far it got (empty when all were)."""
    order = coarse_to_fine(len(configs))
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
