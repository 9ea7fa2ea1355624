"""Pareto Testing: the configuration a query asks for, certified on data it was not chosen on.

Three roles (Laufer-Goldshtein et al., ICLR 2023): *fit* (the front is searched), *calibration* (only
tests), *holdout* (only reports; not used here). ``search.calibration`` decides where the calibration
data comes from: the cache's ``calibration`` split (fit = the whole search split), else a seeded cut of
the search split.

For "cheapest within a drop eps": the candidates are the dp front of the fit part, the constrained
answers at a ladder of drops below eps, and *tempered* copies of each (thresholds moved 25/50/75/90% of
the way to the exit's highest fit score: safer configurations between the fit front and the base model,
which the fit front skips where cheaper configurations did better on the fit part by chance). Before
calibration is looked at they are ordered most expensive first, those whose fit rates could not pass at
this calibration size left out (``order="fit_z"``, the former default, orders by the fit part's z
statistic instead). Fixed-sequence testing then walks the order on calibration, accepting while the
bound (``search.certify``) rejects H: drop > eps at level delta, and stops at the first failure; the
cheapest accepted is returned. The walk is valid at level delta whatever its length and order, as long
as the order is fixed without calibration data.
"Most accurate within relative cost B" is the mirror image: certifies mean relative cost <= B (betting
test on per-sample cost / its maximum) and reports a lower confidence bound on the accuracy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validation import SearchError, check_scalar
from .calibration import DEFAULT_FRACTION, Roles, calibration_roles
from .certify import (
    DEFAULT_BOUND,
    PairedLosses,
    accuracy_lower_bound,
    betting_p_value,
    check_delta,
    get_bound,
    mean_upper_bound,
    paired_losses,
    samples_to_certify,
    smallest_certifiable_drop,
)
from .config import ExitConfig
from .engines.dp import DPEngine
from .front import Front
from .problem import ExitProblem
from .queries import _cheapest_within_drop, _most_accurate_within_budget
from .time_objective import TimeCostTable
from .units import check_drop_points, points_to_fraction

__all__ = [
    "DEFAULT_DELTA",
    "Certificate",
    "CertifiedAnswer",
    "certified_within_drop",
    "certified_within_budget",
    "fit_front",
    "certify_drop",
    "certify_budget",
    "fixed_sequence_test",
    "outcomes",
    "retest",
]

DEFAULT_DELTA = 0.1
DEFAULT_ORDER = (
    "cost"  # the drop sequence: most expensive first (benchmarks/bench_population.py compares)
)
ORDERS = ("cost", "smoothed", "fit_z")
_LADDER_STEPS = 8  # constrained answers at drops eps * k / 8, k = 0..7 (budgets likewise below B)
_SLACK = 1.0  # keep candidates whose predicted z on calibration is within this of passing


# -- per-sample outcomes -------------------------------------------------------------------------


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
    exit_costs = problem.costs.exit_costs(config.exits) / problem.costs.base_cost
    lookup = np.zeros(problem.n_exits)
    lookup[list(config.exits) + [problem.final_exit]] = exit_costs
    return (
        problem.correct[leave, np.arange(problem.n_samples)],
        lookup[leave],
        float(exit_costs.max()),
    )


def _losses(problem: ExitProblem, config: ExitConfig) -> PairedLosses:
    return paired_losses(outcomes(problem, config)[0], problem.correct[problem.final_exit])


def _cost_p_value(cost: np.ndarray, top: float, budget: float, delta: float) -> float:
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
        L = paired_losses(right, cal.correct[cal.final_exit])
        return {
            "certified": b.certifies(L, eps, delta),
            "n_cal": cal.n_samples,
            "p_value": b.p_value(L, eps, delta),
            "observed_drop": L.drop,
        }
    p = _cost_p_value(cost, top, cert["certified_relative_cost"], delta)
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


# -- results -------------------------------------------------------------------------------------


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


# -- the drop query --------------------------------------------------------------------------------


def fit_front(roles: Roles, front: Front | None) -> Front | None:
    """``front`` (searched on the problem handed to :func:`calibration_roles`) when it may serve as the
    fit front: the fit part is that problem whole; else None (dp on the fit part)."""
    return front if front is not None and roles.fit_is_given else None


_TEMPER = (
    0.25,
    0.5,
    0.75,
    0.9,
)  # safer versions of each candidate: thresholds moved this share toward the top


def _tempered(fit: ExitProblem, configs: list[ExitConfig], shares=_TEMPER) -> list[ExitConfig]:
    """Each configuration with its thresholds moved part of the way to its exits' highest score on the fit part:
    fewer samples leave early, so the sequence also holds configurations between the fit front and the base
    model (the fit front skips them where cheaper configurations did better on the fit part by chance)."""
    top = fit.scores.max(axis=1).astype(np.float64)
    out = []
    for c in configs:
        for a in shares:
            ts = tuple(
                t + a * max(float(top[e]) - t, 0.0)
                for e, t in zip(c.exits, c.thresholds, strict=True)
            )
            if c.exits and ts != c.thresholds:
                # the same exits, thresholds between a valid one and a score seen there: valid by construction
                out.append(
                    dataclasses.replace(c, thresholds=ts, id="", predicted={}).built_for(fit.cache)
                )
    return out


def _dedupe(configs: list[ExitConfig]) -> list[ExitConfig]:
    return list(dict.fromkeys(configs))


def _fit_rows(
    fit: ExitProblem, candidates: list[ExitConfig], eps: float
) -> list[tuple[float, float, float, ExitConfig]]:
    """Per candidate on the fit part: observed drop, its per-sample variance, mean relative cost."""
    n_f = fit.n_samples
    base = fit.correct[fit.final_exit]
    rows = []
    for c in candidates:
        right, cost, _ = outcomes(fit, c)
        L = paired_losses(right, base)
        rows.append((L.drop, max(L.discordance - L.drop**2, 1.0 / n_f), float(cost.mean()), c))
    return rows


def _isotonic_decreasing(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares fit of ``x`` (ordered by increasing cost) that never increases (pool adjacent
    violators)."""
    vals: list[float] = []
    wts: list[float] = []
    sizes: list[int] = []
    for xi, wi in zip(x, w, strict=True):
        vals.append(float(xi))
        wts.append(float(wi))
        sizes.append(1)
        while len(vals) > 1 and vals[-2] < vals[-1]:
            v, ww, n = vals.pop(), wts.pop(), sizes.pop()
            vals[-1] = (vals[-1] * wts[-1] + v * ww) / (wts[-1] + ww)
            wts[-1] += ww
            sizes[-1] += n
    return np.repeat(vals, sizes)


def _drop_sequence(
    fit: ExitProblem,
    candidates: list[ExitConfig],
    eps: float,
    delta: float,
    n_cal: int,
    order: str = DEFAULT_ORDER,
) -> list[ExitConfig]:
    """The sequence to test, fixed on the fit part alone.

    ``fit_z``: by the fit part's z for drop <= eps (safest first, ties to the more expensive), each kept
    only if cheaper than all safer ones, stopped where the predicted z on ``n_cal`` samples is out of
    reach. ``cost``: most expensive first, the candidates out of reach dropped. ``smoothed``: most
    expensive first, out of reach judged on the fit drop smoothed along the cost axis (non-increasing in
    cost, so lucky or unlucky single candidates take their neighbours' level).
    """
    from scipy import stats

    if order not in ORDERS:
        raise SearchError(f"order {order!r}: choose one of {list(ORDERS)}")
    rows = _fit_rows(fit, candidates, eps)
    z_pass = float(stats.norm.ppf(1 - delta)) - _SLACK
    if order == "fit_z":
        rows.sort(key=lambda r: (-(eps - r[0]) / math.sqrt(r[1]), -r[2]))
        sequence, cheapest = [], math.inf
        for drop, var, cost, c in rows:
            if (eps - drop) / math.sqrt(var) * math.sqrt(n_cal) < z_pass:
                break
            if cost < cheapest:
                sequence.append(c)
                cheapest = cost
        return sequence
    rows.sort(key=lambda r: r[2])  # cheapest first
    drops = np.array([r[0] for r in rows])
    if order == "smoothed" and rows:
        drops = _isotonic_decreasing(drops, np.ones(len(rows)))
    sequence, last_cost = [], None
    for (_, var, cost, c), d in reversed(list(zip(rows, drops, strict=True))):
        if (
            cost >= 1.0
            or (eps - d) / math.sqrt(var) * math.sqrt(n_cal) < z_pass
            or cost == last_cost
        ):
            continue  # no cheaper than the base model, out of reach, or a tie
        sequence.append(c)
        last_cost = cost
    return sequence


def _capped(front: Front, max_exits: int | None) -> Front:
    """``front`` without the configurations that enable more than ``max_exits`` exits."""
    if max_exits is None:
        return front
    return front.take([i for i, c in enumerate(front.configs) if len(c.exits) <= max_exits])


def certified_within_drop(
    search: ExitProblem,
    max_drop: float,
    *,
    delta: float = DEFAULT_DELTA,
    bound: str = DEFAULT_BOUND,
    fraction: float = DEFAULT_FRACTION,
    seed: int = 0,
    front: Front | None = None,
    max_exits: int | None = None,
) -> CertifiedAnswer:
    """The cheapest configuration whose accuracy drop against the base is <= ``max_drop`` points (0.5 = half a
    point; ``search.units``)
    with confidence 1 - ``delta``, by Pareto Testing. ``front``: configurations searched on the whole
    search split (used as candidates only when the cache has a calibration split of its own)."""
    drop = points_to_fraction(check_drop_points(max_drop))
    check_delta(delta)
    roles = calibration_roles(search, fraction=fraction, seed=seed)
    return certify_drop(
        roles,
        drop,
        delta=delta,
        bound=bound,
        fit_front=fit_front(roles, front),
        max_exits=max_exits,
    )


def certify_drop(
    roles: Roles,
    max_drop: float,
    *,
    delta: float = DEFAULT_DELTA,
    bound: str = DEFAULT_BOUND,
    fit_front: Front | None = None,
    max_exits: int | None = None,
    order: str = DEFAULT_ORDER,
    temper: bool | tuple[float, ...] = True,
) -> CertifiedAnswer:
    """Pareto Testing for a drop limit (``max_drop`` a fraction here) on given roles; ``fit_front`` must have
    been searched on ``roles.fit`` alone (default: dp on it). ``max_exits``: every candidate enables at most
    that many exits."""
    b = get_bound(bound)
    fit, cal = roles.fit, roles.calibration
    fit_front = _capped(
        DPEngine().run(fit, max_exits=max_exits) if fit_front is None else fit_front, max_exits
    )
    ladder = [
        _cheapest_within_drop(
            fit, max_drop * k / _LADDER_STEPS, front=fit_front, n_bisect=0, max_exits=max_exits
        ).config
        for k in range(_LADDER_STEPS)
    ]
    base_error = 1.0 - fit.base.accuracy
    in_reach = [
        c
        for c, F in zip(fit_front.configs, fit_front.F, strict=True)
        if F[0] - base_error < max_drop
    ]  # others: z < 0
    candidates = _dedupe(in_reach + ladder)
    if temper:
        candidates = _dedupe(
            candidates + _tempered(fit, candidates, _TEMPER if temper is True else temper)
        )
    sequence = _drop_sequence(fit, candidates, max_drop, delta, cal.n_samples, order)
    losses = {}

    def passes(c: ExitConfig) -> bool:
        losses[c] = _losses(cal, c)
        return b.certifies(losses[c], max_drop, delta)

    n_pass = fixed_sequence_test(sequence, passes)
    if n_pass == 0:
        return CertifiedAnswer(
            ExitConfig(score=fit.score),
            None,
            roles,
            sequence,
            *_what_it_would_take(sequence, cal, max_drop, delta, b.name),
        )
    chosen = sequence[n_pass - 1]
    L = losses[chosen]
    cert = Certificate(
        "drop",
        b.name,
        float(delta),
        cal.n_samples,
        float(max_drop),
        roles.split,
        roles.fraction,
        roles.seed,
        b.p_value(L, max_drop, delta),
        L.drop,
        len(losses),
        len(sequence),
    )
    return CertifiedAnswer(chosen, cert, roles, sequence)


def _what_it_would_take(
    sequence: list[ExitConfig], cal: ExitProblem, eps: float, delta: float, bound: str
) -> tuple[float | None, int | None]:
    """The first configuration's bound on calibration, and the fewest calibration samples that would
    certify ``eps`` for any configuration of the sequence at its calibration rates."""
    if not sequence:
        return smallest_certifiable_drop(cal.n_samples, delta, bound), None
    b = get_bound(bound)
    smallest = b.upper_bound(_losses(cal, sequence[0]), delta)
    needed = []
    for c in sequence:
        L = _losses(cal, c)
        n = samples_to_certify(eps, delta, L.k_plus / L.n, L.k_minus / L.n, bound)
        if n is not None:
            needed.append(n)
    return smallest, (min(needed) if needed else None)


# -- the budget query --------------------------------------------------------------------------------


def _budget_sequence(
    fit: ExitProblem, candidates: list[ExitConfig], budget: float, delta: float, n_cal: int
) -> list[ExitConfig]:
    """Order by the fit part's z for mean relative cost <= budget (cheapest-safest first, ties to the more
    accurate), keep each only if more accurate than all safer ones, cut where out of reach at ``n_cal``."""
    from scipy import stats

    rows = []
    for c in candidates:
        right, cost, _ = outcomes(fit, c)
        unit_z = (budget - cost.mean()) / max(float(cost.std()), 1.0 / fit.n_samples)
        rows.append((unit_z, float(right.mean()), c))
    rows.sort(key=lambda r: (-r[0], -r[1]))
    z_pass = float(stats.norm.ppf(1 - delta)) - _SLACK
    sequence, best = [], -math.inf
    for unit_z, acc, c in rows:
        if unit_z * math.sqrt(n_cal) < z_pass:
            break
        if acc > best:
            sequence.append(c)
            best = acc
    return sequence


def certified_within_budget(
    search: ExitProblem,
    budget: float,
    *,
    delta: float = DEFAULT_DELTA,
    fraction: float = DEFAULT_FRACTION,
    seed: int = 0,
    front: Front | None = None,
    max_exits: int | None = None,
) -> CertifiedAnswer:
    """The most accurate configuration whose mean relative cost is <= ``budget`` with confidence
    1 - ``delta`` (betting test on per-sample cost / the configuration's largest per-sample cost), with a
    lower confidence bound on its accuracy, simultaneous over the sequence (level delta / its length)."""
    check_scalar(budget, "budget", min_val=0.0)
    check_delta(delta)
    roles = calibration_roles(search, fraction=fraction, seed=seed)
    return certify_budget(
        roles, budget, delta=delta, fit_front=fit_front(roles, front), max_exits=max_exits
    )


def certify_budget(
    roles: Roles,
    budget: float,
    *,
    delta: float = DEFAULT_DELTA,
    fit_front: Front | None = None,
    max_exits: int | None = None,
) -> CertifiedAnswer:
    """Pareto Testing for a cost budget on given roles; ``fit_front`` searched on ``roles.fit`` alone;
    ``max_exits``: every candidate enables at most that many exits."""
    fit, cal = roles.fit, roles.calibration
    fit_front = _capped(
        DPEngine().run(fit, max_exits=max_exits) if fit_front is None else fit_front, max_exits
    )
    margin = 0.5 * math.sqrt(2 * math.log(1 / delta) / cal.n_samples)
    ladder = []
    for k in range(_LADDER_STEPS):
        try:
            ladder.append(
                _most_accurate_within_budget(
                    fit, budget - margin * k / 2, front=fit_front, n_bisect=0, max_exits=max_exits
                ).config
            )
        except SearchError:
            break  # below the cheapest reachable cost
    in_reach = [c for c, F in zip(fit_front.configs, fit_front.F, strict=True) if F[1] <= budget]
    sequence = _budget_sequence(fit, _dedupe(in_reach + ladder), budget, delta, cal.n_samples)
    p_values = {}

    def passes(c: ExitConfig) -> bool:
        _, cost, top = outcomes(cal, c)
        p_values[c] = _cost_p_value(cost, top, budget, delta)
        return p_values[c] <= delta

    n_pass = fixed_sequence_test(sequence, passes)
    if n_pass == 0:
        safest = sequence[0] if sequence else fit_front.configs[int(np.argmin(fit_front.F[:, 1]))]
        _, cost, top = outcomes(cal, safest)
        smallest = top * mean_upper_bound(cost / top, delta)
        return CertifiedAnswer(None, None, roles, sequence, smallest_certifiable=smallest)
    chosen = sequence[n_pass - 1]
    right, cost, _ = outcomes(cal, chosen)
    n_right = int(np.count_nonzero(right))
    cert = Certificate(
        "cost",
        "betting",
        float(delta),
        cal.n_samples,
        float(budget),
        roles.split,
        roles.fraction,
        roles.seed,
        p_values[chosen],
        float(cost.mean()),
        len(p_values),
        len(sequence),
        accuracy_lower_bound(n_right, cal.n_samples, delta / len(sequence)),
    )
    return CertifiedAnswer(chosen, cert, roles, sequence)
