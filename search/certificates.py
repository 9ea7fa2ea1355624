"""What a certified answer is made of: per-sample outcomes a test reads, the fixed-sequence test, the
records (:class:`Certificate`, :class:`CertifiedAnswer`) and :func:`retest`, a recorded certificate's
test re-run (``search.pareto_testing`` builds the sequences and runs the walk)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .calibration import Roles
from .certify import (
    PairedLosses,
    accuracy_lower_bound,
    betting_p_value,
    get_bound,
    paired_losses,
)
from .config import ExitConfig
from .problem import ExitProblem
from .time_objective import TimeCostTable

__all__ = [
    "Certificate",
    "CertifiedAnswer",
    "cost_p_value",
    "fallback_test",
    "fixed_sequence_test",
    "losses_of",
    "outcomes",
    "retest",
]


def outcomes(problem: ExitProblem, config: ExitConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """Per sample under ``config``: right ``(n,)`` bool and relative cost ``(n,)``; and the largest relative
    cost any sample can have under it."""
    leave = problem.assign(config)
    if (
        not problem.costs.additive
    ):  # time at B > 1: each item's expected time spread over the rows reaching it
        assert isinstance(problem.costs, TimeCostTable)  # the one table that is not additive
        cost = problem.costs.sample_costs(config.exits, leave) / problem.costs.base_cost
        return problem.correct[leave, np.arange(problem.n_samples)], cost, float(cost.max())
    costs = problem.costs_of(config.exits, config.rule_names)
    exit_costs = costs.exit_costs(config.exits) / costs.base_cost
    lookup = np.zeros(problem.n_exits)
    lookup[list(config.exits) + [problem.final_exit]] = exit_costs
    return (
        problem.correct[leave, np.arange(problem.n_samples)],
        lookup[leave],
        float(exit_costs.max()),
    )


def losses_of(problem: ExitProblem, config: ExitConfig) -> PairedLosses:
    """Paired losses of ``config`` against the base model on ``problem``."""
    return paired_losses(outcomes(problem, config)[0], problem.correct[problem.final_exit])


def cost_p_value(cost: np.ndarray, top: float, budget: float, delta: float) -> float:
    """Betting p-value of H: mean relative cost > ``budget``, per-sample costs scaled by their largest value."""
    return betting_p_value(cost / top, budget / top, delta)


def retest(cal: ExitProblem, config: ExitConfig, cert: dict) -> dict:
    """A certificate's own test (``Certificate.to_json``, checked by ``search.export_schema``) re-run for
    ``config`` on ``cal`` (the recorded calibration rows in their tested order): whether it passes
    (``certified``) and the fields it computed (``n_cal``, ``p_value``, the observed drop or cost, the
    accuracy bound), as :func:`certify_drop` / :func:`certify_budget` compute them."""
    delta = cert["delta"]
    right, cost, top = outcomes(cal, config)
    if cert["kind"] == "drop":
        b, eps = get_bound(cert["bound"]), cert["certified_drop"]
        level = cert.get("level", delta)  # a fallback walk tests at a share of delta
        L = paired_losses(right, cal.correct[cal.final_exit])
        return {
            "certified": b.certifies(L, eps, level),
            "n_cal": cal.n_samples,
            "p_value": b.p_value(L, eps, level),
            "observed_drop": L.drop,
        }
    p = cost_p_value(cost, top, cert["certified_relative_cost"], delta)
    out = {
        "certified": p <= delta,
        "n_cal": cal.n_samples,
        "p_value": p,
        "observed_relative_cost": float(cost.mean()),
    }
    if "sequence" in cert:
        out["accuracy_lower_bound"] = accuracy_lower_bound(
            int(np.count_nonzero(right)), cal.n_samples, delta / cert["sequence"]
        )
    return out


@dataclass(frozen=True)
class Certificate:
    """What was certified, how, and on which data; ``to_json`` is the export's ``certificate`` object."""

    kind: str  # "drop" or "cost"
    bound: str  # name in search.certify.BOUNDS ("betting" for costs)
    delta: float
    n_cal: int
    certified: float  # the accuracy drop (fraction) or the mean relative cost certified
    split: str  # "calibration" or "search" (a seeded cut of it)
    fraction: float | None
    seed: int
    p_value: float
    observed: float  # drop (or mean relative cost) on the calibration samples
    tested: int  # configurations tested before the walk stopped
    sequence: int  # configurations in the sequence
    accuracy_lower_bound: float | None = None
    level: float | None = (
        None  # fallback walk: the level (<= delta) this configuration's test passed at
    )

    def to_json(self) -> dict:
        doc = {
            "kind": self.kind,
            "bound": self.bound,
            "delta": self.delta,
            "n_cal": self.n_cal,
            "certified_drop" if self.kind == "drop" else "certified_relative_cost": self.certified,
            "split": self.split,
            "seed": self.seed,
            "p_value": self.p_value,
            "observed_drop" if self.kind == "drop" else "observed_relative_cost": self.observed,
            "tested": self.tested,
            "sequence": self.sequence,
        }
        if self.fraction is not None:
            doc["fraction"] = self.fraction
        if self.accuracy_lower_bound is not None:
            doc["accuracy_lower_bound"] = self.accuracy_lower_bound
        if self.level is not None:
            doc["level"] = self.level
        return doc


@dataclass(frozen=True)
class CertifiedAnswer:
    """The configuration returned and its certificate; ``certificate`` is None when nothing in the
    sequence passed (then ``config`` is the base model for a drop query, None for a budget query).

    ``smallest_certifiable`` (when nothing passed): the bound of the sequence's first (safest)
    configuration on calibration, the smallest drop (or mean relative cost) this calibration set
    certifies for it; ``samples_needed``: about how many
    calibration samples would certify the asked limit, from the calibration rates of the configuration
    that needs the fewest (None when none would).
    """

    config: ExitConfig | None
    certificate: Certificate | None
    roles: Roles
    sequence: list[ExitConfig]
    smallest_certifiable: float | None = None
    samples_needed: int | None = None


def fixed_sequence_test(sequence: list, passes: Callable[[Any], bool]) -> int:
    """Walk ``sequence`` in order while ``passes(item)`` holds; return how many passed (stop at the first failure)."""
    n = 0
    for item in sequence:
        if not passes(item):
            break
        n += 1
    return n


def fallback_test(
    sequence: list,
    weights: list[float],
    passes: Callable[[Any, float], bool],
    cap: float | None = None,
) -> list[tuple[int, float]]:
    """Wiens' fallback procedure: item ``i`` is tested at level ``weights[i]`` plus the level of item
    ``i - 1`` when that one passed (a failure passes nothing on, and the walk goes on); returns the
    ``(index, level)`` of every item that passed. Items whose level is 0 are not tested.

    The family-wise error is at most ``sum(weights)`` under any dependence: at the first true hypothesis
    rejected, every earlier true one failed, so its level sums only weights after the previous true one;
    these ranges are disjoint, and a union bound gives ``sum(weights)``. ``weights = (delta, 0, ...)`` is the
    fixed-sequence test. ``cap`` (default: the weights' exact sum) keeps a carried level from rising above
    the total through rounding.
    """
    passed: list[tuple[int, float]] = []
    carry, total = 0.0, math.fsum(weights) if cap is None else cap
    for i, (item, w) in enumerate(zip(sequence, weights, strict=True)):
        level = min(carry + w, total)  # never above the total through rounding
        if level > 0.0 and passes(item, level):
            passed.append((i, level))
            carry = level
        else:
            carry = 0.0
    return passed
