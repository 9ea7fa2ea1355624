"""``Budget``: when a search must stop, shared by every engine."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from numbers import Real

from data_cache.interrupts import raise_if_terminating

from ._validation import SearchError

__all__ = ["Budget"]


@dataclass
class Budget:
    """Stop after ``max_evals`` evaluations or ``max_seconds`` wall time, whichever comes first.

    ``None`` means unlimited. Engines call :meth:`start` once, then :meth:`exhausted` between steps;
    the exact DP ignores the budget but reports its evaluations.
    """

    max_evals: int | None = None
    max_seconds: float | None = None
    _t0: float = field(default=0.0, init=False, repr=False)
    _evals0: int = field(default=0, init=False, repr=False)

    def __post_init__(self):
        evals, seconds = self.max_evals, self.max_seconds
        if evals is not None and not (
            _is_number(evals) and math.isfinite(evals) and evals == int(evals) >= 1
        ):
            raise SearchError(f"evaluation budget must be an integer >= 1 (got {evals!r})")
        if seconds is not None and not (_is_number(seconds) and seconds > 0):
            raise SearchError(f"time limit must be > 0 seconds (got {seconds!r})")

    def start(self, problem) -> Budget:
        self._t0, self._evals0 = time.perf_counter(), problem.n_evals
        return self

    def evals_left(self, problem) -> float:
        return (
            float("inf")
            if self.max_evals is None
            else self.max_evals - (problem.n_evals - self._evals0)
        )

    def progress(self, problem) -> float:
        """Fraction of the budget used, in [0, 1] (0 for an unlimited budget)."""
        parts = [0.0]
        if self.max_evals is not None:
            parts.append((problem.n_evals - self._evals0) / self.max_evals)
        if self.max_seconds is not None:
            parts.append((time.perf_counter() - self._t0) / self.max_seconds)
        return min(1.0, max(parts))

    def exhausted(self, problem) -> bool:
        raise_if_terminating()  # a SIGTERM whose exception was swallowed still ends every engine's loop
        return self.progress(problem) >= 1.0


def _is_number(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)
