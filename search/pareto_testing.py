"""Pareto Testing: the configuration a query asks for, certified on data it was not chosen on.

Three roles (Laufer-Goldshtein et al., ICLR 2023): *fit* (the front is searched), *calibration* (only
tests), *holdout* (only reports; not used here). The cache's ``calibration`` split is the calibration
set when it has one (fit = the whole search split); otherwise the search split is cut at random
(``fraction`` of it, seeded) into calibration and fit.

For "cheapest within a drop eps": the candidates are the dp front of the fit part plus the constrained
answers at a ladder of drops below eps. Before calibration is looked at they are ordered safest first
by the fit part's one-sided z statistic for drop <= eps (ties: the more expensive first), kept only
where each is cheaper than every safer one, and cut where even the fit part's rates could not pass at
this calibration size. Fixed-sequence testing then walks the order on calibration, accepting while
the bound (``search.certify``) rejects H: drop > eps at level delta, and stops at the first failure;
the cheapest accepted is returned. The walk is valid at level delta whatever its length.
"Most accurate within relative cost B" is the mirror image: certifies mean relative cost <= B (betting
test on per-sample cost / its maximum) and reports a lower confidence bound on the accuracy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._validation import SearchError, as_generator, check_scalar
from .certify import (DEFAULT_BOUND, PairedLosses, accuracy_lower_bound, betting_p_value, check_delta, get_bound,
                      mean_upper_bound, paired_losses, samples_to_certify, smallest_certifiable_drop)
from .config import ExitConfig
from .engines.dp import DPEngine
from .front import Front
from .problem import ExitProblem
from .queries import cheapest_within_drop, most_accurate_within_budget

__all__ = ["DEFAULT_DELTA", "DEFAULT_FRACTION", "CALIBRATION_SPLIT", "Roles", "Certificate", "CertifiedAnswer",
           "calibration_roles", "check_calibration_split", "check_fraction", "planned_calibration_size",
           "check_certifiable", "certified_within_drop", "certified_within_budget", "certify_drop", "certify_budget",
           "fixed_sequence_test"]

DEFAULT_DELTA = 0.1
DEFAULT_FRACTION = 0.5
CALIBRATION_SPLIT = "calibration"
_LADDER_STEPS = 8          # constrained answers at drops eps * k / 8, k = 0..7 (budgets likewise below B)
_SLACK = 1.0               # keep candidates whose predicted z on calibration is within this of passing
_MISMATCH_Z = 8.0          # an exit whose accuracy differs this much between search and calibration is refused


# -- roles -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Roles:
    """The fit and calibration parts of one certification; ``calibration`` rows are in a seeded random order."""

    fit: ExitProblem
    calibration: ExitProblem
    split: str                 # "calibration" (the cache's split) or "search" (cut from it)
    fraction: float | None     # the calibration share of the search split when cut
    seed: int


def check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise SearchError(f"--calibration-fraction {fraction}: must be in (0, 1) (the share of the search split "
                          "kept for calibration, e.g. 0.5)")
    return float(fraction)


def _split_parts(cache) -> dict | None:
    """Which dataset part each split's ``sample_index`` counts rows of, when the dump recorded it."""
    dataset = cache.meta.provenance.get("dataset")
    parts = (dataset.get("parameters") or {}).get("split_parts") if isinstance(dataset, dict) else None
    return parts if isinstance(parts, dict) else None


def check_calibration_split(cache) -> None:
    """Refuse a ``calibration`` split that cannot serve as calibration data for this cache's search split.

    Its rows must not be rows of ``search`` or ``holdout`` (``sample_index`` disjoint, where the two splits
    count rows of the same dataset part; without a record of parts, one index space is assumed), and its
    exits must be the search split's: an exit whose top-1 accuracy differs by more than 8 standard errors
    between the two splits marks predictions from other heads or another model.
    """
    if CALIBRATION_SPLIT not in cache.splits():
        return
    if cache.n_samples(CALIBRATION_SPLIT) == 0:
        raise SearchError("the cache's calibration split is empty")
    cal = np.asarray(cache.sample_index(CALIBRATION_SPLIT))
    parts = _split_parts(cache)
    if np.unique(cal).size != cal.size:
        raise SearchError("calibration split: sample_index repeats rows; each calibration sample must be distinct")
    for other in ("search", "holdout"):
        if other not in cache.splits() or (parts and parts.get(other) != parts.get(CALIBRATION_SPLIT)):
            continue
        shared = np.intersect1d(cal, np.asarray(cache.sample_index(other)))
        if shared.size:
            raise SearchError(f"calibration split shares {shared.size} rows with {other} (sample_index "
                              f"{shared[:3].tolist()}...); calibration data must be unseen by the search and the "
                              "holdout: dump it again with --calibration-size")
    labels_s, labels_c = np.asarray(cache.labels("search")), np.asarray(cache.labels(CALIBRATION_SPLIT))
    ids_s, ids_c = cache.topk_ids("search"), cache.topk_ids(CALIBRATION_SPLIT)
    for e, info in enumerate(cache.exits):
        a, b = np.mean(ids_s[e, 0] == labels_s), np.mean(ids_c[e, 0] == labels_c)
        pooled = (a * labels_s.size + b * labels_c.size) / (labels_s.size + labels_c.size)
        se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / labels_s.size + 1 / labels_c.size))
        if abs(a - b) > _MISMATCH_Z * se:
            raise SearchError(f"calibration split: exit {info.name!r} is right on {b:.2%} of calibration but "
                              f"{a:.2%} of search; its predictions come from other exits or another model")


def planned_calibration_size(cache, fraction: float) -> int:
    """How many calibration samples a certification on ``cache`` will use."""
    if CALIBRATION_SPLIT in cache.splits():
        return cache.n_samples(CALIBRATION_SPLIT)
    return int(round(cache.n_samples("search") * fraction))


def check_certifiable(max_drop: float, n_cal: int, delta: float, bound: str = DEFAULT_BOUND) -> None:
    """Refuse a drop no configuration without gains over the base could be certified for at this size."""
    least = smallest_certifiable_drop(n_cal, delta, bound)
    if max_drop < least:
        raise SearchError(f"a calibration set of {n_cal} samples cannot certify a drop of {100 * max_drop:g} points at "
                          f"delta {delta:g}: the smallest drop it certifies is {100 * least:.3f} points (a "
                          "configuration that agrees with the base model on every calibration sample); ask for more, "
                          "add calibration samples (data_cache.dump --calibration-size, --calibration-fraction) "
                          "or pass --uncertified")


def calibration_roles(search: ExitProblem, *, fraction: float = DEFAULT_FRACTION, seed: int = 0) -> Roles:
    """Fit and calibration parts for ``search`` (an ExitProblem on the ``search`` split)."""
    rng = as_generator(seed)
    cache = search.cache
    if CALIBRATION_SPLIT in cache.splits():
        check_calibration_split(cache)
        cal = search.on_split(CALIBRATION_SPLIT)
        return Roles(search, cal.take(rng.permutation(cal.n_samples)), CALIBRATION_SPLIT, None, int(seed))
    check_fraction(fraction)
    perm = rng.permutation(search.n_samples)
    n_cal = int(round(search.n_samples * fraction))
    if not 0 < n_cal < search.n_samples:
        raise SearchError(f"a calibration fraction of {fraction} of {search.n_samples} search samples leaves the fit "
                          "or the calibration part empty")
    return Roles(search.take(np.sort(perm[n_cal:])), search.take(perm[:n_cal]), "search", float(fraction), int(seed))


# -- per-sample outcomes -------------------------------------------------------------------------

def _right(problem: ExitProblem, config: ExitConfig) -> np.ndarray:
    """Whether each sample is right under ``config`` ``(n,)`` bool."""
    return problem.correct[problem.assign(config), np.arange(problem.n_samples)]


def _relative_costs(problem: ExitProblem, config: ExitConfig) -> tuple[np.ndarray, float]:
    """Per-sample relative cost under ``config`` ``(n,)`` and its largest possible value (any sample)."""
    exit_costs = problem.costs.exit_costs(config.exits) / problem.costs.base_cost
    lookup = np.zeros(problem.n_exits)
    lookup[list(config.exits) + [problem.final_exit]] = exit_costs
    return lookup[problem.assign(config)], float(exit_costs.max())


def _losses(problem: ExitProblem, config: ExitConfig) -> PairedLosses:
    return paired_losses(_right(problem, config), problem.correct[problem.final_exit])


# -- results -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Certificate:
    """What was certified, how, and on which data; ``to_json`` is the export's ``certificate`` object."""

    kind: str                  # "drop" or "cost"
    bound: str                 # name in search.certify.BOUNDS ("betting" for costs)
    delta: float
    n_cal: int
    certified: float           # the accuracy drop (fraction) or the mean relative cost certified
    split: str                 # "calibration" or "search" (a seeded cut of it)
    fraction: float | None
    seed: int
    p_value: float
    observed: float            # drop (or mean relative cost) on the calibration samples
    tested: int                # configurations tested before the walk stopped
    sequence: int              # configurations in the sequence
    accuracy_lower_bound: float | None = None

    def to_json(self) -> dict:
        doc = {"kind": self.kind, "bound": self.bound, "delta": self.delta, "n_cal": self.n_cal,
               "certified_drop" if self.kind == "drop" else "certified_relative_cost": self.certified,
               "split": self.split, "seed": self.seed, "p_value": self.p_value,
               "observed_drop" if self.kind == "drop" else "observed_relative_cost": self.observed,
               "tested": self.tested, "sequence": self.sequence}
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


def fixed_sequence_test(sequence: list, passes) -> int:
    """Walk ``sequence`` in order while ``passes(item)`` holds; return how many passed (stop at the first failure)."""
    n = 0
    for item in sequence:
        if not passes(item):
            break
        n += 1
    return n


# -- the drop query --------------------------------------------------------------------------------

def _fit_front(roles: Roles, front: Front | None) -> Front | None:
    """``front`` when it may serve as the fit front: searched on the whole search split while the
    calibration data is a split of its own; else None (dp on the fit part)."""
    return front if front is not None and roles.split == CALIBRATION_SPLIT else None


def _dedupe(configs: list[ExitConfig]) -> list[ExitConfig]:
    return list(dict.fromkeys(configs))


def _drop_sequence(fit: ExitProblem, candidates: list[ExitConfig], eps: float, delta: float,
                   n_cal: int) -> list[ExitConfig]:
    """Order by the fit part's z for drop <= eps (safest first, ties to the more expensive), keep each only
    if cheaper than all safer ones, stop where the predicted z on ``n_cal`` samples is out of reach."""
    from scipy import stats

    n_f = fit.n_samples
    base = fit.correct[fit.final_exit]
    rows = []
    for c in candidates:
        L = paired_losses(_right(fit, c), base)
        var = max(L.discordance - L.drop ** 2, 1.0 / n_f)
        rows.append(((eps - L.drop) / math.sqrt(var), fit.evaluate_one(c).relative_cost, c))
    rows.sort(key=lambda r: (-r[0], -r[1]))
    z_pass = float(stats.norm.ppf(1 - delta)) - _SLACK
    sequence, cheapest = [], math.inf
    for unit_z, cost, c in rows:
        if unit_z * math.sqrt(n_cal) < z_pass:
            break
        if cost < cheapest:
            sequence.append(c)
            cheapest = cost
    return sequence


def certified_within_drop(search: ExitProblem, max_drop: float, *, delta: float = DEFAULT_DELTA,
                          bound: str = DEFAULT_BOUND, fraction: float = DEFAULT_FRACTION, seed: int = 0,
                          front: Front | None = None) -> CertifiedAnswer:
    """The cheapest configuration whose accuracy drop against the base is <= ``max_drop`` (a fraction)
    with confidence 1 - ``delta``, by Pareto Testing. ``front``: configurations searched on the whole
    search split (used as candidates only when the cache has a calibration split of its own)."""
    check_scalar(max_drop, "max_drop", min_val=0.0, max_val=1.0)
    check_delta(delta)
    roles = calibration_roles(search, fraction=fraction, seed=seed)
    return certify_drop(roles, max_drop, delta=delta, bound=bound, fit_front=_fit_front(roles, front))


def certify_drop(roles: Roles, max_drop: float, *, delta: float = DEFAULT_DELTA, bound: str = DEFAULT_BOUND,
                 fit_front: Front | None = None) -> CertifiedAnswer:
    """Pareto Testing for a drop limit on given roles; ``fit_front`` must have been searched on
    ``roles.fit`` alone (default: dp on it)."""
    b = get_bound(bound)
    fit, cal = roles.fit, roles.calibration
    fit_front = DPEngine().run(fit) if fit_front is None else fit_front
    ladder = [cheapest_within_drop(fit, max_drop * k / _LADDER_STEPS, front=fit_front, n_bisect=0).config
              for k in range(_LADDER_STEPS)]
    sequence = _drop_sequence(fit, _dedupe(fit_front.configs + ladder), max_drop, delta, cal.n_samples)
    losses = {}

    def passes(c: ExitConfig) -> bool:
        losses[c] = _losses(cal, c)
        return b.certifies(losses[c], max_drop, delta)

    n_pass = fixed_sequence_test(sequence, passes)
    if n_pass == 0:
        return CertifiedAnswer(ExitConfig(score=fit.score), None, roles, sequence,
                               *_what_it_would_take(sequence, cal, max_drop, delta, b.name))
    chosen = sequence[n_pass - 1]
    L = losses[chosen]
    cert = Certificate("drop", b.name, float(delta), cal.n_samples, float(max_drop), roles.split, roles.fraction,
                       roles.seed, b.p_value(L, max_drop, delta), L.drop, len(losses), len(sequence))
    return CertifiedAnswer(chosen, cert, roles, sequence)


def _what_it_would_take(sequence: list[ExitConfig], cal: ExitProblem, eps: float, delta: float,
                        bound: str) -> tuple[float | None, int | None]:
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

def _budget_sequence(fit: ExitProblem, candidates: list[ExitConfig], budget: float, delta: float,
                     n_cal: int) -> list[ExitConfig]:
    """Order by the fit part's z for mean relative cost <= budget (cheapest-safest first, ties to the more
    accurate), keep each only if more accurate than all safer ones, cut where out of reach at ``n_cal``."""
    from scipy import stats

    rows = []
    for c in candidates:
        cost, _ = _relative_costs(fit, c)
        unit_z = (budget - cost.mean()) / max(float(cost.std()), 1.0 / fit.n_samples)
        rows.append((unit_z, float(np.mean(_right(fit, c))), c))
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


def certified_within_budget(search: ExitProblem, budget: float, *, delta: float = DEFAULT_DELTA,
                            fraction: float = DEFAULT_FRACTION, seed: int = 0,
                            front: Front | None = None) -> CertifiedAnswer:
    """The most accurate configuration whose mean relative cost is <= ``budget`` with confidence
    1 - ``delta`` (betting test on per-sample cost / the configuration's largest per-sample cost), with a
    lower confidence bound on its accuracy, simultaneous over the sequence (level delta / its length)."""
    check_scalar(budget, "budget", min_val=0.0)
    check_delta(delta)
    roles = calibration_roles(search, fraction=fraction, seed=seed)
    return certify_budget(roles, budget, delta=delta, fit_front=_fit_front(roles, front))


def certify_budget(roles: Roles, budget: float, *, delta: float = DEFAULT_DELTA,
                   fit_front: Front | None = None) -> CertifiedAnswer:
    """Pareto Testing for a cost budget on given roles; ``fit_front`` searched on ``roles.fit`` alone."""
    fit, cal = roles.fit, roles.calibration
    fit_front = DPEngine().run(fit) if fit_front is None else fit_front
    margin = 0.5 * math.sqrt(2 * math.log(1 / delta) / cal.n_samples)
    ladder = []
    for k in range(_LADDER_STEPS):
        try:
            ladder.append(most_accurate_within_budget(fit, budget - margin * k / 2, front=fit_front,
                                                      n_bisect=0).config)
        except SearchError:
            break  # below the cheapest reachable cost
    in_reach = [c for c, F in zip(fit_front.configs, fit_front.F) if F[1] <= budget]
    sequence = _budget_sequence(fit, _dedupe(in_reach + ladder), budget, delta, cal.n_samples)
    p_values = {}

    def passes(c: ExitConfig) -> bool:
        cost, top = _relative_costs(cal, c)
        p_values[c] = betting_p_value(cost / top, budget / top, delta)
        return p_values[c] <= delta

    n_pass = fixed_sequence_test(sequence, passes)
    if n_pass == 0:
        safest = sequence[0] if sequence else min(fit_front.configs, key=lambda c: fit.evaluate_one(c).relative_cost)
        cost, top = _relative_costs(cal, safest)
        return CertifiedAnswer(None, None, roles, sequence, smallest_certifiable=top * mean_upper_bound(cost / top, delta))
    chosen = sequence[n_pass - 1]
    cost, _ = _relative_costs(cal, chosen)
    n_right = int(np.count_nonzero(_right(cal, chosen)))
    cert = Certificate("cost", "betting", float(delta), cal.n_samples, float(budget), roles.split, roles.fraction,
                       roles.seed, p_values[chosen], float(cost.mean()), len(p_values), len(sequence),
                       accuracy_lower_bound(n_right, cal.n_samples, delta / len(sequence)))
    return CertifiedAnswer(chosen, cert, roles, sequence)
