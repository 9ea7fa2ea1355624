"""Certifying an accuracy drop (or a cost) from calibration samples: one-sided bounds at level delta.

Per calibration sample, against the base model, the paired loss of a configuration is
``L = 1[config wrong] - 1[base wrong]`` in {-1, 0, 1}; the accuracy drop is its mean R. "Drop <= eps
with confidence 1 - delta" is a one-sided test of H: R > eps at level delta. Three valid tests
(``docs/certification.md`` compares them):

- ``trinomial`` (the default): Berger-Boos exact test on the counts k+ (losses) and k- (gains). At the
  boundary p+ - p- = eps the statistic T = k+ - k- has an exact law for each discordance s = p+ + p-;
  the p-value is gamma + the supremum of P_s(T <= t) over a (1 - gamma) upper Clopper-Pearson
  interval for s.
- ``betting``: Waudby-Smith-Ramdas hedged capital on (L + 1) / 2 in [0, 1], samples in a seeded random
  order; anytime-valid (more calibration data can be added later).
- ``cp-union``: Clopper-Pearson upper bound on p+ minus lower bound on p-, each at delta / 2 (the
  previous ``--risk`` rule, kept for comparison; it adds the two margins).

L is never clipped at 0, and never fed into a bound made for [0, 1] losses without its own target.
The mean of a bounded per-sample cost is certified with the betting test on cost / max cost.
scipy is imported inside the functions that need it (``python -m search.pareto --help`` stays fast).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._validation import SearchError

__all__ = [
    "PairedLosses",
    "Bound",
    "BOUNDS",
    "DEFAULT_BOUND",
    "get_bound",
    "paired_losses",
    "trinomial_p_value",
    "betting_p_value",
    "cp_union_upper_bound",
    "mean_upper_bound",
    "accuracy_lower_bound",
    "smallest_certifiable_drop",
    "samples_to_certify",
    "check_delta",
]

_TAIL = 1e-12  # binomial mass outside the summation window is at most this much, added back
_GRID = 9  # discordance values evaluated between eps and the upper end of its interval


@dataclass(frozen=True)
class PairedLosses:
    """Paired losses of one configuration against the base on ``n`` calibration samples.

    ``k_plus``: samples the configuration gets wrong and the base right (losses); ``k_minus``: the
    reverse (gains). ``values`` ``(n,)`` int8 in {-1, 0, 1}, in the order the betting test reads them
    (None: counts only; :meth:`sequence` then arranges them in a seeded random order).
    """

    n: int
    k_plus: int
    k_minus: int
    values: np.ndarray | None = None

    def __post_init__(self):
        if self.k_plus < 0 or self.k_minus < 0 or self.k_plus + self.k_minus > self.n:
            raise SearchError(
                f"counts k+={self.k_plus}, k-={self.k_minus} do not fit in n={self.n} samples"
            )

    @property
    def drop(self) -> float:
        """Observed accuracy drop (k+ - k-) / n."""
        return (self.k_plus - self.k_minus) / self.n if self.n else 0.0

    @property
    def discordance(self) -> float:
        """Observed (k+ + k-) / n."""
        return (self.k_plus + self.k_minus) / self.n if self.n else 0.0

    def sequence(self) -> np.ndarray:
        """The losses in reading order ``(n,)`` int8."""
        if self.values is not None:
            return self.values
        v = np.zeros(self.n, dtype=np.int8)
        v[: self.k_plus], v[self.k_plus : self.k_plus + self.k_minus] = 1, -1
        return np.random.default_rng(0).permutation(v)

    @classmethod
    def from_values(cls, values: np.ndarray) -> PairedLosses:
        v = np.asarray(values, dtype=np.int8)
        return cls(
            int(v.shape[0]), int(np.count_nonzero(v == 1)), int(np.count_nonzero(v == -1)), v
        )


def paired_losses(config_right: np.ndarray, base_right: np.ndarray) -> PairedLosses:
    """``L_i = 1[config wrong] - 1[base wrong]`` from two boolean ``(n,)`` correctness vectors."""
    return PairedLosses.from_values(base_right.astype(np.int8) - config_right.astype(np.int8))


def check_delta(delta: float) -> float:
    """``delta`` if it is a risk level in (0, 0.5], else a SearchError naming it."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 < delta <= 0.5:
        raise SearchError(
            f"--risk {delta}: the risk level delta must be in (0, 0.5] (e.g. 0.1 for 90% confidence)"
        )
    return float(delta)


# -- exact trinomial test (Berger-Boos) ------------------------------------------------------------


def _tail_at_boundary(n: int, t: int, eps: float, s: np.ndarray) -> np.ndarray:
    """Upper approximations of P_s(T <= t) at p+ - p- = eps for discordances ``s`` ``(m,)``.

    P_s(T <= t) = sum_D Binom(D; n, s) BinomCDF(floor((t + D) / 2); D, (s + eps) / (2 s)). The sum
    runs over D within 8 standard deviations (+ 10) of n s; the exact binomial mass outside that
    window is added (so the value is never below the true probability).
    """
    from scipy import special, stats

    sd = np.sqrt(n * s * (1 - s))
    lo = np.clip(np.floor(n * s - 8 * sd - 10), 0, n).astype(np.int64)
    hi = np.clip(np.ceil(n * s + 8 * sd + 10), 0, n).astype(np.int64)
    width = int((hi - lo).max()) + 1
    D = lo[:, None] + np.arange(width)[None, :]  # (m, width)
    inside = D <= hi[:, None]
    D = np.minimum(D, n)
    q = np.minimum(1.0, (s + eps) / (2 * s))[:, None]
    k = (t + D) // 2
    cdf = np.where(k < 0, 0.0, np.where(k >= D, 1.0, special.bdtr(np.clip(k, 0, None), D, q)))
    pmf = np.where(inside, stats.binom.pmf(D, n, s[:, None]), 0.0)
    outside = stats.binom.cdf(lo - 1, n, s) + stats.binom.sf(hi, n, s)
    return np.minimum(1.0, (pmf * cdf).sum(axis=1) + outside)


def trinomial_p_value(
    n: int, k_plus: int, k_minus: int, eps: float, delta: float, *, gamma: float | None = None
) -> float:
    """Berger-Boos p-value of H: drop > ``eps`` from counts (see :func:`_trinomial_p_value`); a function of
    the counts alone, so it is computed once per distinct question (a certified walk asks many alike)."""
    return _trinomial_p_value(
        int(n),
        int(k_plus),
        int(k_minus),
        float(eps),
        float(delta),
        None if gamma is None else float(gamma),
    )


@functools.lru_cache(maxsize=4096)
def _trinomial_p_value(
    n: int, k_plus: int, k_minus: int, eps: float, delta: float, gamma: float | None
) -> float:
    """Berger-Boos p-value of H: drop > ``eps`` (``eps`` >= 0) from counts; ``gamma`` defaults to delta / 10.

    p = gamma + sup over s in [eps, s_hi] of P_s(T <= k+ - k-), with s_hi the (1 - gamma) upper
    Clopper-Pearson bound on the discordance from k+ + k-. In the rejection region P_s rises with s,
    so the supremum sits at s_hi; a grid over the interval makes that a check rather than an assumption.
    """
    from scipy import stats

    if n == 0:
        return 1.0
    if eps >= 1.0:
        return 0.0
    gamma = delta / 10 if gamma is None else gamma
    d = k_plus + k_minus
    s_hi = 1.0 if d >= n else float(stats.beta.ppf(1 - gamma, d + 1, n - d))
    s_lo = max(eps, 1e-12)
    if s_hi < s_lo:
        return gamma  # no discordance compatible with the data can reach the boundary
    grid = np.unique(np.concatenate([np.linspace(s_lo, s_hi, _GRID), [s_hi]]))
    return float(min(1.0, gamma + _tail_at_boundary(n, k_plus - k_minus, eps, grid).max()))


# -- betting (Waudby-Smith and Ramdas, hedged capital) --------------------------------------------


def _bets(x: np.ndarray, delta: float) -> np.ndarray:
    """Predictable bets nu_i = min(1, sqrt(2 log(1/delta) / (n sig2_{i-1}))) for ``x`` in [0, 1]."""
    n = x.shape[0]
    i = np.arange(1, n + 1)
    mu = (0.5 + np.cumsum(x)) / (i + 1)
    sig2 = (0.25 + np.cumsum((x - mu) ** 2)) / (i + 1)
    prev = np.concatenate([[0.25], sig2[:-1]])
    return np.minimum(1.0, np.sqrt(2 * math.log(1 / delta) / (n * prev)))


def betting_p_value(
    x: np.ndarray, m: float, delta: float, *, bets: np.ndarray | None = None
) -> float:
    """p-value of H: E[x] >= ``m`` for ``x`` ``(n,)`` in [0, 1] (in their given order), bets tuned to ``delta``.

    Capital K_t = prod_{i<=t} (1 + nu_i (m - x_i)) is a nonnegative supermartingale under H, so
    p = min(1, 1 / max_t K_t) is valid at every stopping time (Ville's inequality).
    """
    n = x.shape[0]
    if n == 0 or m <= 0.0:
        return 1.0
    if m > 1.0:
        return 0.0
    nu = _bets(x, delta) if bets is None else bets
    log_k = np.cumsum(np.log1p(nu * (m - x)))
    return float(min(1.0, math.exp(-max(0.0, float(log_k.max())))))


def _betting_drop_p(losses: PairedLosses, eps: float, delta: float) -> float:
    if eps >= 1.0:
        return 0.0  # no drop exceeds 1
    return betting_p_value((losses.sequence() + 1) / 2.0, (1 + eps) / 2, delta)


def mean_upper_bound(x: np.ndarray, delta: float) -> float:
    """Upper confidence bound (level 1 - delta) on E[x] for ``x`` in [0, 1], by the betting test."""
    nu = _bets(x, delta)
    return _bisect(lambda m: betting_p_value(x, m, delta, bets=nu) <= delta, 0.0, 1.0)


# -- Clopper-Pearson union (the previous rule) -----------------------------------------------------


def cp_union_upper_bound(losses: PairedLosses, delta: float) -> float:
    """CP upper bound on p+ minus CP lower bound on p-, each one-sided at delta / 2."""
    from scipy import stats

    n, kp, km, a = losses.n, losses.k_plus, losses.k_minus, delta / 2
    if n == 0:
        return 1.0
    upper = 1.0 if kp == n else float(stats.beta.ppf(1 - a, kp + 1, n - kp))
    lower = 0.0 if km == 0 else float(stats.beta.ppf(a, km, n - km + 1))
    return upper - lower


def accuracy_lower_bound(n_correct: int, n: int, delta: float) -> float:
    """One-sided Clopper-Pearson lower bound (level 1 - delta) on an accuracy."""
    from scipy import stats

    return 0.0 if n_correct == 0 else float(stats.beta.ppf(delta, n_correct, n - n_correct + 1))


# -- the bounds behind one interface ---------------------------------------------------------------


def _bisect(ok: Callable[[float], bool], lo: float, hi: float, tol: float = 1e-7) -> float:
    """Smallest x in [lo, hi] with ``ok(x)`` (``ok`` monotone: false then true); ``hi`` if none below."""
    if ok(lo):
        return lo
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class Bound:
    """A one-sided test of H: drop > eps on paired losses; ``upper_bound`` inverts it (smallest eps passed)."""

    name: str
    title: str
    p_value: Callable[[PairedLosses, float, float], float]  # (losses, eps, delta) -> p
    decide: Callable[[PairedLosses, float, float], bool] | None = (
        None  # a faster certifies, when there is one
    )

    def certifies(self, losses: PairedLosses, eps: float, delta: float) -> bool:
        """True when H: drop > ``eps`` is rejected at level ``delta``."""
        if self.decide is not None:
            return self.decide(losses, eps, delta)
        return self.p_value(losses, eps, delta) <= delta

    def upper_bound(self, losses: PairedLosses, delta: float) -> float:
        """Upper confidence bound on the drop at level 1 - delta (floored at 0: gains are not certified)."""
        return _bisect(lambda eps: self.certifies(losses, eps, delta), 0.0, 1.0)


def _cp_union_p(losses: PairedLosses, eps: float, delta: float) -> float:
    """The smallest level at which the CP-union bound is <= eps (1 when none is)."""
    if cp_union_upper_bound(losses, 1.0) > eps:
        return 1.0
    return _bisect(lambda a: cp_union_upper_bound(losses, a) <= eps, 1e-12, 1.0, tol=1e-9)


BOUNDS: dict[str, Bound] = {
    "trinomial": Bound(
        "trinomial",
        "exact trinomial test (Berger-Boos)",
        lambda losses, eps, delta: trinomial_p_value(
            losses.n, losses.k_plus, losses.k_minus, eps, delta
        ),
    ),
    "betting": Bound("betting", "betting (Waudby-Smith-Ramdas hedged capital)", _betting_drop_p),
    "cp-union": Bound(
        "cp-union",
        "Clopper-Pearson union (losses upper minus gains lower)",
        _cp_union_p,
        lambda losses, eps, delta: cp_union_upper_bound(losses, delta) <= eps,
    ),
}
DEFAULT_BOUND = "trinomial"


def get_bound(name: str | Bound) -> Bound:
    """A bound by name (``BOUNDS``) or the bound itself."""
    if isinstance(name, Bound):
        return name
    if name not in BOUNDS:
        raise SearchError(f"unknown bound {name!r}; choose one of {', '.join(BOUNDS)}")
    return BOUNDS[name]


# -- what a calibration size can certify -----------------------------------------------------------


def smallest_certifiable_drop(
    n: int, delta: float, bound: str | Bound = DEFAULT_BOUND, *, k_plus: int = 0, k_minus: int = 0
) -> float:
    """The smallest drop certified on ``n`` samples with these counts (default: a configuration that
    agrees with the base on every sample, the best a configuration without gains can show)."""
    if n == 0:
        return 1.0
    return get_bound(bound).upper_bound(PairedLosses(n, k_plus, k_minus), delta)


def samples_to_certify(
    eps: float,
    delta: float,
    p_plus: float,
    p_minus: float,
    bound: str | Bound = DEFAULT_BOUND,
    *,
    max_n: int = 10**7,
) -> int | None:
    """About how many calibration samples certify ``eps`` for a configuration whose loss and gain rates
    are ``p_plus`` and ``p_minus`` (expected counts); None when no sample size does (drop >= eps)."""
    if p_plus - p_minus >= eps:
        return None
    b = get_bound(bound)

    def ok(log_n: float) -> bool:
        n = int(round(math.exp(log_n)))
        kp, km = int(round(n * p_plus)), int(round(n * p_minus))
        return b.certifies(PairedLosses(n, kp, km), eps, delta)

    if not ok(math.log(max_n)):
        return None
    return int(round(math.exp(_bisect(ok, math.log(10), math.log(max_n), tol=0.01))))
