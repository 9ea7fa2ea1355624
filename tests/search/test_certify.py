"""The bounds of search/certify.py: validity by simulation, exactness, edge cases, inversions."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from search import SearchError
from search.certify import (
    BOUNDS,
    PairedLosses,
    accuracy_lower_bound,
    check_delta,
    cp_union_upper_bound,
    get_bound,
    mean_upper_bound,
    paired_losses,
    samples_to_certify,
    smallest_certifiable_drop,
    trinomial_p_value,
)

DELTA = 0.1


def _draw(rng, n: int, s: float, drop: float) -> PairedLosses:
    """n paired losses with discordance s and mean ``drop``, in random order."""
    p_plus, p_minus = (s + drop) / 2, (s - drop) / 2
    v = rng.choice(np.array([1, -1, 0], dtype=np.int8), size=n, p=[p_plus, p_minus, 1 - s])
    return PairedLosses.from_values(v)


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_each_bound_keeps_its_level_at_the_boundary(name):
    """True drop = asked drop: the bound certifies in at most delta of the draws (3 Monte-Carlo errors)."""
    rng = np.random.default_rng(7)
    bound, draws, eps = BOUNDS[name], 300, 0.01
    hits = sum(bound.certifies(_draw(rng, 1500, 0.06, eps), eps, DELTA) for _ in range(draws))
    assert hits / draws <= DELTA + 3 * math.sqrt(DELTA * (1 - DELTA) / draws)


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_each_bound_certifies_a_clearly_smaller_drop(name):
    rng = np.random.default_rng(8)
    hits = sum(BOUNDS[name].certifies(_draw(rng, 1500, 0.06, 0.0), 0.03, DELTA) for _ in range(20))
    assert hits >= 18


def test_trinomial_p_value_equals_the_brute_force_supremum():
    """On a small n, the p-value equals gamma + max over a fine grid of s of the exact trinomial tail."""
    n, kp, km, eps = 25, 2, 1, 0.1
    gamma = DELTA / 10
    s_hi = stats.beta.ppf(1 - gamma, kp + km + 1, n - kp - km)
    a = np.arange(n + 1)
    KP, KM = np.meshgrid(a, a, indexing="ij")
    ok = KP + KM <= n
    counts = np.stack([KP[ok], KM[ok], n - KP[ok] - KM[ok]], axis=1)
    low = (KP[ok] - KM[ok]) <= kp - km
    best = max(np.exp(stats.multinomial.logpmf(counts, n, [(s + eps) / 2, (s - eps) / 2, 1 - s]))[low].sum()
               for s in np.linspace(eps, s_hi, 401))
    assert trinomial_p_value(n, kp, km, eps, DELTA) == pytest.approx(gamma + best, rel=1e-9)


def test_tightness_of_the_default_at_the_reference_point():
    """3% discordance, observed drop 0.5 points, n = 10,000: within 0.27 points; CP union needs far more."""
    n, s, r = 10_000, 0.03, 0.005
    losses = PairedLosses(n, round(n * (s + r) / 2), round(n * (s - r) / 2))
    exact = get_bound("trinomial").upper_bound(losses, DELTA) - losses.drop
    union = cp_union_upper_bound(losses, DELTA) - losses.drop
    assert exact <= 0.0027 and union >= exact + 0.001


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_upper_bound_is_the_inverse_of_the_test(name):
    rng = np.random.default_rng(3)
    losses = _draw(rng, 2000, 0.05, 0.004)
    b = BOUNDS[name]
    ub = b.upper_bound(losses, DELTA)
    assert ub >= losses.drop
    assert b.certifies(losses, ub + 1e-6, DELTA) and not b.certifies(losses, ub - 1e-4, DELTA)


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_edge_cases(name):
    b = BOUNDS[name]
    none = PairedLosses(3000, 0, 0)               # no discordance at all
    assert 0 < b.upper_bound(none, DELTA) < 0.005
    every = PairedLosses(50, 50, 0)               # every sample lost
    assert not b.certifies(every, 0.5, DELTA) and b.upper_bound(every, DELTA) > 0.9
    gains = PairedLosses(400, 0, 40)              # only gains: drop <= 0 is certified
    assert b.upper_bound(gains, DELTA) == 0.0
    for n in (1, 3):                              # tiny n certifies nothing small
        assert not b.certifies(PairedLosses(n, 0, 0), 0.05, DELTA)
    assert not b.certifies(PairedLosses(0, 0, 0), 0.5, DELTA)
    assert b.certifies(PairedLosses(10, 10, 0), 1.0, DELTA)  # a drop of 1 always holds


def test_losses_are_paired_and_never_clipped():
    config = np.array([True, False, True, False])
    base = np.array([True, True, False, False])
    L = paired_losses(config, base)
    assert L.values.tolist() == [0, 1, -1, 0] and (L.k_plus, L.k_minus, L.drop) == (1, 1, 0.0)
    with pytest.raises(SearchError, match="do not fit"):
        PairedLosses(3, 2, 2)


def test_betting_bound_on_a_mean_covers_by_simulation():
    rng = np.random.default_rng(5)
    values, probs = np.array([0.1, 0.5, 1.0]), np.array([0.5, 0.3, 0.2])
    mean = values @ probs
    misses = sum(mean_upper_bound(rng.choice(values, size=800, p=probs), DELTA) < mean for _ in range(150))
    assert misses / 150 <= DELTA + 3 * math.sqrt(DELTA * (1 - DELTA) / 150)


def test_accuracy_lower_bound_is_clopper_pearson():
    assert accuracy_lower_bound(0, 10, 0.1) == 0.0
    lo = accuracy_lower_bound(90, 100, 0.1)
    assert lo < 0.9 and stats.binom.sf(89, 100, lo) == pytest.approx(0.1, rel=1e-6)


def test_what_a_calibration_size_can_certify():
    small, large = smallest_certifiable_drop(1000, DELTA), smallest_certifiable_drop(10_000, DELTA)
    assert 0 < large < small
    n = samples_to_certify(0.005, DELTA, 0.02, 0.018)
    assert n is not None
    def ok(m):
        return get_bound("trinomial").certifies(PairedLosses(m, round(m * 0.02), round(m * 0.018)), 0.005, DELTA)
    assert ok(int(n * 1.05)) and not ok(int(n * 0.8))
    assert samples_to_certify(0.005, DELTA, 0.03, 0.02) is None  # drops 1 point: never


def test_large_calibration_sets_are_handled():
    p = trinomial_p_value(1_000_000, 30_000, 25_000, 0.006, DELTA)
    z = (0.006 - 0.005) / math.sqrt(0.055 / 1_000_000)
    assert 0 < p < 1 and p == pytest.approx(DELTA / 10 + stats.norm.sf(z), abs=0.01)


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.6, float("nan"), "0.1"])
def test_bad_delta(bad):
    with pytest.raises(SearchError, match="delta"):
        check_delta(bad)


def test_unknown_bound():
    with pytest.raises(SearchError, match="unknown bound 'nope'"):
        get_bound("nope")
