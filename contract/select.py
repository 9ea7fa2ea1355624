"""Choosing a configuration of an ``exitconfig/1`` table by its predicted numbers: the one ``select`` of
``exits.ExitRuntime`` and ``bundle.BundleRouter``, and the rule that a drop is in points of top-1 accuracy.

Drops are in points everywhere (``--max-drop 0.5``, ``select(max_drop=0.5)``): 0.5 is half a point. A value that
looks like the other unit is refused in one line: above :data:`MAX_DROP_POINTS` (a percentage of something else),
or non-zero below :data:`MIN_DROP_POINTS` (a fraction such as 0.005 meant as half a point). Certificates store
fractions (``certified_drop``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .config import ExitConfig
from .errors import ContractError

__all__ = ["MIN_DROP_POINTS", "MAX_DROP_POINTS", "drop_points_problem", "select_config"]

MIN_DROP_POINTS = 0.05
MAX_DROP_POINTS = 20.0


def drop_points_problem(value: object) -> str | None:
    """Why ``value`` is not a drop in points (None when it is one)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        return (
            f"must be a number of points >= 0 (0.5 = half a point of top-1 accuracy); got {value!r}"
        )
    if value > MAX_DROP_POINTS:
        return (
            f"{value:g} points is above {MAX_DROP_POINTS:g}: drops are in points of top-1 accuracy "
            "(0.5 = half a point), not a percentage of the base accuracy"
        )
    if 0 < value < MIN_DROP_POINTS:
        return (
            f"{value:g} looks like a fraction; drops are in points of top-1 accuracy (0.5 = half a point): "
            f"pass {100 * value:g} for {100 * value:g} points (non-zero drops start at {MIN_DROP_POINTS:g})"
        )
    return None


def select_config(
    configs: Sequence[ExitConfig],
    budget: float | None = None,
    *,
    max_drop: float | None = None,
    split: str = "search",
) -> ExitConfig:
    """The configuration ``select`` switches to, or a ContractError saying why none fits.

    ``budget``: the most accurate whose predicted relative cost on ``split`` (in the table's ``objective`` units)
    is <= ``budget`` (ties: the cheaper). ``max_drop``: the cheapest (predicted on ``split``) whose certificate
    certifies an accuracy drop <= ``max_drop`` points.
    """
    if (budget is None) == (max_drop is None):
        raise ContractError("select needs exactly one of budget= and max_drop=")
    if max_drop is not None:
        return _certified_within(configs, max_drop, split)
    if (
        isinstance(budget, bool)
        or not isinstance(budget, (int, float))
        or not math.isfinite(budget)
    ):
        raise ContractError(f"budget: must be a finite relative cost (e.g. 0.6); got {budget!r}")
    costed = [(c, cost) for c in configs if (cost := c.relative_cost(split)) is not None]
    fits = [(c, cost) for c, cost in costed if cost <= budget]
    if not fits:
        cheapest = min((cost for _, cost in costed), default=None)
        raise ContractError(
            f"no configuration within relative cost {budget} on {split}; the cheapest costs "
            f"{'nothing known' if cheapest is None else cheapest}"
        )
    return max(fits, key=lambda fit: (fit[0].accuracy(split) or 0.0, -fit[1]))[0]


def _certified_within(configs: Sequence[ExitConfig], points: float, split: str) -> ExitConfig:
    """The cheapest configuration certified within ``points`` (certificates store fractions)."""
    problem = drop_points_problem(points)
    if problem is not None:
        raise ContractError(f"max_drop: {problem}")
    certified: dict[str, float | None] = {
        c.id: (c.certificate or {}).get("certified_drop") for c in configs
    }
    fits = [
        c
        for c in configs
        if (drop := certified[c.id]) is not None and drop <= points / 100.0 + 1e-12
    ]
    if not fits:
        known = sorted(round(100 * v, 6) for v in certified.values() if v is not None)
        raise ContractError(
            f"no configuration of the table is certified within a drop of {points:g} points; "
            + (
                f"certified drops (points): {known}"
                if known
                else "it holds no drop certificate (search.pareto --max-drop without --uncertified)"
            )
        )
    return min(
        fits,
        key=lambda c: (
            c.relative_cost(split) if c.relative_cost(split) is not None else 1.0,
            -(c.accuracy(split) or 0.0),
        ),
    )
