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
this calibration size left out, and each kept only if no cheaper one disagrees with the base model on
fewer fit samples (``search.candidate_sequence``; ``order="fit_z"``, an older default, orders by the fit
part's z statistic instead). Fixed-sequence testing then walks the order on calibration, accepting while
the bound (``search.certify``) rejects H: drop > eps at level delta, and stops at the first failure; the
cheapest accepted is returned. The walk is valid at level delta whatever its length and order, as long
as the order is fixed without calibration data. ``procedure="fallback"`` walks the same sequence with
Wiens' fallback procedure instead (delta shared out, a failure no longer ends the walk;
``search.certificates.fallback_test``); the population benchmark found no gain, so it is not the default.
"Most accurate within relative cost B" is the mirror image: certifies mean relative cost <= B (betting
test on per-sample cost / its maximum) and reports a lower confidence bound on the accuracy.
"""

from __future__ import annotations

import math

import numpy as np

from ._validation import SearchError, check_scalar
from .calibration import DEFAULT_FRACTION, Roles, calibration_roles
from .candidate_sequence import DEFAULT_ORDER, budget_sequence, dedupe, drop_sequence
from .candidate_sequence import tempered as _tempered
from .certificates import (
    Certificate,
    CertifiedAnswer,
    cost_p_value,
    fallback_test,
    fixed_sequence_test,
    losses_of,
    outcomes,
    retest,
)
from .certify import (
    DEFAULT_BOUND,
    accuracy_lower_bound,
    check_delta,
    get_bound,
    mean_upper_bound,
    samples_to_certify,
    smallest_certifiable_drop,
)
from .config import ExitConfig
from .engines.dp import DPEngine
from .front import Front
from .problem import ExitProblem
from .queries import _cheapest_within_drop, _most_accurate_within_budget
from .units import check_drop_points, points_to_fraction

__all__ = [
    "DEFAULT_DELTA",
    "PROCEDURES",
    "Certificate",
    "CertifiedAnswer",
    "certified_within_drop",
    "certified_within_budget",
    "fit_front",
    "certify_drop",
    "certify_budget",
    "fallback_test",
    "fallback_weights",
    "fixed_sequence_test",
    "outcomes",
    "retest",
]

DEFAULT_DELTA = 0.1
PROCEDURES = ("fixed", "fallback")  # how the drop query walks its sequence
_FALLBACK_SPREAD = 0.2  # the fallback walk's share of delta spread over all but the first candidate
_LADDER_STEPS = 8  # constrained answers at drops eps * k / 8, k = 0..7 (budgets likewise below B)
_TEMPER = (
    0.25,
    0.5,
    0.75,
    0.9,
)  # safer versions of each candidate: thresholds moved this share toward the top


# -- the drop query --------------------------------------------------------------------------------


def fit_front(roles: Roles, front: Front | None) -> Front | None:
    """``front`` (searched on the problem handed to :func:`calibration_roles`) when it may serve as the
    fit front: the fit part is that problem whole; else None (dp on the fit part)."""
    return front if front is not None and roles.fit_is_given else None


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
    procedure: str = "fixed",
) -> CertifiedAnswer:
    """Pareto Testing for a drop limit (``max_drop`` a fraction here) on given roles; ``fit_front`` must have
    been searched on ``roles.fit`` alone (default: dp on it). ``max_exits``: every candidate enables at most
    that many exits. ``procedure``: ``fixed`` (stop at the first failure) or ``fallback``."""
    if procedure not in PROCEDURES:
        raise SearchError(f"procedure {procedure!r}: choose one of {list(PROCEDURES)}")
    b = get_bound(bound)
    fit, cal = roles.fit, roles.calibration
    fit_front = _capped(
        DPEngine().run(fit, max_exits=max_exits) if fit_front is None else fit_front, max_exits
    )
    candidates = _drop_candidates(fit, fit_front, max_drop, max_exits, temper)
    sequence = drop_sequence(fit, candidates, max_drop, delta, cal.n_samples, order)
    losses = {}

    def passes(c: ExitConfig, level: float = delta) -> bool:
        losses[c] = losses_of(cal, c)
        return b.certifies(losses[c], max_drop, level)

    if procedure == "fixed":
        passed = [(i, delta) for i in range(fixed_sequence_test(sequence, passes))]
    else:
        passed = fallback_test(sequence, fallback_weights(len(sequence), delta), passes, delta)
    if not passed:
        return CertifiedAnswer(
            ExitConfig(score=fit.score),
            None,
            roles,
            sequence,
            *_what_it_would_take(sequence, cal, max_drop, delta, b.name),
        )
    i, level = passed[
        -1
    ]  # the sequence runs from expensive to cheap: the last passed is the cheapest
    chosen, L = sequence[i], losses[sequence[i]]
    cert = Certificate(
        "drop",
        b.name,
        float(delta),
        cal.n_samples,
        float(max_drop),
        roles.split,
        roles.fraction,
        roles.seed,
        b.p_value(L, max_drop, level),
        L.drop,
        len(losses),
        len(sequence),
        level=None if procedure == "fixed" else float(level),
    )
    return CertifiedAnswer(chosen, cert, roles, sequence)


def fallback_weights(m: int, delta: float) -> list[float]:
    """The fallback walk's levels for a sequence of ``m``: most of ``delta`` on the first (safest) candidate,
    so that a run of passes carries nearly all of it, and ``_FALLBACK_SPREAD`` of it spread evenly over the
    others, so that a failure leaves the rest a level of their own. They sum to ``delta``."""
    if m <= 1:
        return [delta] * m
    rest = delta * _FALLBACK_SPREAD / (m - 1)
    return [delta - rest * (m - 1)] + [rest] * (m - 1)


def _drop_candidates(
    fit: ExitProblem,
    fit_front: Front,
    max_drop: float,
    max_exits: int | None,
    temper: bool | tuple[float, ...],
) -> list[ExitConfig]:
    """The drop query's candidates: the fit front's configurations in reach, the constrained answers at
    a ladder of drops below ``max_drop``, and (``temper``) tempered copies of each."""
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
    candidates = dedupe(in_reach + ladder)
    if temper:
        shares: tuple[float, ...] = _TEMPER if isinstance(temper, bool) else temper
        candidates = dedupe(candidates + _tempered(fit, candidates, shares))
    return candidates


def _what_it_would_take(
    sequence: list[ExitConfig], cal: ExitProblem, eps: float, delta: float, bound: str
) -> tuple[float | None, int | None]:
    """The first configuration's bound on calibration, and the fewest calibration samples that would
    certify ``eps`` for any configuration of the sequence at its calibration rates."""
    if not sequence:
        return smallest_certifiable_drop(cal.n_samples, delta, bound), None
    b = get_bound(bound)
    smallest = b.upper_bound(losses_of(cal, sequence[0]), delta)
    needed = []
    for c in sequence:
        L = losses_of(cal, c)
        n = samples_to_certify(eps, delta, L.k_plus / L.n, L.k_minus / L.n, bound)
        if n is not None:
            needed.append(n)
    return smallest, (min(needed) if needed else None)


# -- the budget query --------------------------------------------------------------------------------


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
    sequence = budget_sequence(fit, dedupe(in_reach + ladder), budget, delta, cal.n_samples)
    p_values = {}

    def passes(c: ExitConfig) -> bool:
        _, cost, top = outcomes(cal, c)
        p_values[c] = cost_p_value(cost, top, budget, delta)
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
