"""Helpers shared by the population engines (``nsga2``, ``optuna``): lazy imports, dp seeds, archive,
constraints on the base model."""

from __future__ import annotations

import copy
import importlib

import numpy as np

from .._validation import SearchError
from ..encoding import check_constraints, constraint_values
from ..front import Front, non_dominated
from ..indicators import hypervolume
from . import engine_class
from ._base import Candidates

__all__ = ["import_optional", "dp_front", "Archive", "base_within_constraints"]


def import_optional(module: str, engine: str, package: str):
    """Import ``module`` or raise SearchError naming the package to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise SearchError(f"engine {engine!r} needs {package}: pip install {package}") from None


def dp_front(problem, engine: str) -> Front:
    """The dp engine's front on ``problem`` for seeding; its evaluations are counted apart."""
    try:
        dp = engine_class("dp")
    except SearchError:
        raise SearchError(
            f"{engine}: seed_with_dp needs the 'dp' engine, which is not available"
        ) from None
    return dp().run(copy.copy(problem))


def base_within_constraints(
    base: Candidates, problem, max_drop: float | None, max_cost: float | None
) -> Candidates:
    """``base`` (the base model alone, on a problem without early exits) if it meets the constraints,
    else an empty result saying so."""
    check_constraints(max_drop, max_cost)
    G = constraint_values(
        np.array([[problem.base.error, 1.0]]),
        problem.base.error,
        max_drop=max_drop,
        max_cost=max_cost,
    )
    if (G <= 0).all():
        return base
    return Candidates([], np.zeros((0, 2)), base.message + "; no feasible configuration found")


class Archive:
    """The feasible non-dominated encoded configurations seen so far: ``H``, ``X``, ``F``."""

    def __init__(self, n_positions: int):
        self.H = np.zeros((0, n_positions), dtype=np.int64)
        self.X = np.zeros((0, n_positions))
        self.F = np.zeros((0, 2))

    def add(
        self, H: np.ndarray, X: np.ndarray, F: np.ndarray, feasible: np.ndarray | None = None
    ) -> None:
        """Merge rows (only the ``feasible`` ones when a mask is given) and keep the non-dominated."""
        if feasible is not None:
            H, X, F = H[feasible], X[feasible], F[feasible]
        H, X, F = (
            np.concatenate([self.H, H]),
            np.concatenate([self.X, X]),
            np.concatenate([self.F, F]),
        )
        keep = non_dominated(F)
        self.H, self.X, self.F = H[keep], X[keep], F[keep]

    def hypervolume(self) -> float:
        """Hypervolume of the archive with the fixed reference point (1, 1)."""
        return hypervolume(self.F)
