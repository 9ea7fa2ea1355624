"""Accuracy drops are in points of top-1 accuracy everywhere: on the command line (``--max-drop 0.5``) and in
Python (``ExitRuntime.select(max_drop=0.5)``, ``search.search(max_drop=0.5)``, ``certified_within_drop(problem,
0.5)``, ``cheapest_within_drop(problem, 0.5)``): 0.5 means half a point.

A value that looks like the other unit is refused in one line: a drop above :data:`MAX_DROP_POINTS` (20
points: a percentage of something else, or a fraction times 100 too many), or a non-zero drop below
:data:`MIN_DROP_POINTS` (0.05 points: a fraction such as 0.005 meant as half a point). 0 is a drop of nothing.
Inside the search, drops are fractions (``points_to_fraction``); stored certificates keep fractions too
(``certified_drop`` in an ``exitconfig/1`` file, ``docs/search.md``).
"""

from __future__ import annotations

import argparse

from contract.select import MAX_DROP_POINTS, MIN_DROP_POINTS, drop_points_problem
from data_cache.cli_types import finite_float

from ._validation import SearchError

__all__ = [
    "MIN_DROP_POINTS",
    "MAX_DROP_POINTS",
    "check_drop_points",
    "points_to_fraction",
    "drop_points_arg",
]

_problem = (
    drop_points_problem  # the one rule, shared with ExitRuntime.select and BundleRouter.select
)


def check_drop_points(value: float, name: str = "max_drop") -> float:
    """``value`` as a float if it is a drop in points (see the module docstring), else SearchError naming ``name``."""
    problem = _problem(value)
    if problem is not None:
        raise SearchError(f"{name}: {problem}")
    return float(value)


def points_to_fraction(points: float) -> float:
    """A drop in points as the fraction of samples the search counts with (0.5 -> 0.005)."""
    return points / 100.0


def drop_points_arg(text: str) -> float:
    """argparse type of ``--max-drop``: the same rule, one usage line on failure."""
    try:
        value = finite_float(text)  # plain decimal text only: '1_0', ' 1', 'nan' are refused
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be a number of points (e.g. 0.5), got {text!r}"
        ) from None
    problem = _problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value
