"""The dp engine's curves: the exact objectives of every threshold cut of one option at one position,
and what a position sees from the rest of a state (:class:`Context`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from contract import float32_cut

__all__ = ["Context", "Curve", "descending_order"]


@dataclass
class Curve:
    """Exact objectives of every threshold cut of one option (head slot, or -1 = none) at position j.

    The reaching samples sorted by ``scores`` (descending); letting the first ``m`` of them leave
    gives ``err_at[m]`` errors (a count) and ``cost_at[m]`` summed cost, totals over the whole split,
    for ``m = 0..k``. A threshold can make every ``m`` except those in ``blocked`` (inside a run of
    equal scores, which stay together, and ``k`` when the last score is the lower bound). ``cuts``
    lists the others; ``err``, ``cost`` and ``tau`` give the objectives and thresholds per cut.
    """

    j: int
    slot: int
    err_at: np.ndarray
    cost_at: np.ndarray
    scores: np.ndarray
    blocked: np.ndarray
    bounds: tuple[float, float]
    current: int | None = None  # the m the current state takes, on the current option's curve

    @property
    def n_cuts(self) -> int:
        return self.err_at.size - self.blocked.size

    def cut_at(self, i) -> np.ndarray:
        """The ``m`` of cuts ``i`` (the i-th m that is not blocked)."""
        i = np.asarray(i, dtype=np.int64)
        if not self.blocked.size:
            return i
        shifted = self.blocked - np.arange(
            self.blocked.size
        )  # blocked m minus blocked ones before it
        return i + np.searchsorted(shifted, i, side="right")

    @cached_property
    def cuts(self) -> np.ndarray:
        return self.cut_at(np.arange(self.n_cuts))

    @cached_property
    def err(self) -> np.ndarray:
        return self.err_at[self.cuts]

    @cached_property
    def cost(self) -> np.ndarray:
        return self.cost_at[self.cuts]

    @cached_property
    def tau(self) -> np.ndarray:
        return self.thresholds_at(self.cuts)

    def thresholds_at(self, m) -> np.ndarray:
        """Thresholds letting the first ``m`` leave: the midpoint between the last score that leaves
        and the first that stays (the upper bound for no one, midway to the lower bound for everyone)."""
        m = np.asarray(m, dtype=np.int64)
        lo, hi = self.bounds
        k = self.scores.size
        if k == 0:
            return np.full(m.shape, hi)
        last_out = self.scores[np.maximum(m - 1, 0)].astype(np.float64)
        first_in = np.where(m < k, self.scores[np.minimum(m, k - 1)].astype(np.float64), lo)
        return np.where(m == 0, hi, (last_out + first_in) / 2)

    def weighted_best(self, scale_cost: float, scale_err: float) -> tuple[float, int]:
        """``(value, m)`` minimising ``scale_cost * cost + scale_err * err`` over the cuts."""
        val = self.err_at * (scale_err / scale_cost)
        val += self.cost_at  # the objective / scale_cost
        val[self.blocked] = np.inf
        m = int(np.argmin(val))
        return float(self.cost_at[m] * scale_cost + self.err_at[m] * scale_err), m

    def locate(self, tau: float) -> int:
        """The ``m`` threshold ``tau`` makes (ties never split, so it is always a cut)."""
        return int(
            np.count_nonzero(self.scores > float32_cut(tau))
        )  # the leave test, counted on a sorted curve

    @property
    def nbytes(self) -> int:
        return self.err_at.nbytes + self.cost_at.nbytes + self.scores.nbytes + self.blocked.nbytes


def descending_order(scores: np.ndarray) -> np.ndarray:
    """Indices sorting float32 ``scores`` descending, ties in sample order: an exact O(n) radix sort.

    float32 bit patterns are mapped to uint32 keys that sort like the values (-0.0 made +0.0 first),
    then two stable 16-bit passes (numpy's radix sort) order them.
    """
    u = (np.asarray(scores, dtype=np.float32) + np.float32(0.0)).view(
        np.uint32
    )  # -0.0 ties with 0.0
    key = ~np.where(u >> 31, ~u, u | np.uint32(0x80000000))  # ascending key = descending score
    first = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
    second = np.argsort((key[first] >> 16).astype(np.uint16), kind="stable")
    return first[second].astype(np.int32)


@dataclass
class Context:
    """What position j sees from the rest of a state: the samples reaching it, where each would leave
    if it went on (``nxt``), whether that exit is wrong for it, and the totals of those that left before."""

    reach: np.ndarray
    nxt: np.ndarray
    go_wrong: np.ndarray
    fixed_err: int
    fixed_cost: float
