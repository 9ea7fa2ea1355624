"""The certified drop query's sequence (search/pareto_testing.py): ordered on the fit part alone, most
expensive first, each agreeing with the base more than every cheaper one, with tempered candidates between the
fit front and the base model; the fixed-sequence and fallback walks, valid by simulation."""
from __future__ import annotations

import numpy as np
import pytest

from data_cache.synthetic import make_synthetic_cache
from search import ExitProblem, SearchError
from search.calibration import Roles
from search.certificates import fallback_test, fixed_sequence_test
from search.certify import paired_losses
from search.engines.dp import DPEngine
from search.pareto_testing import _tempered, certify_drop, fallback_weights, outcomes


@pytest.fixture(scope="module")
def population():
    return ExitProblem(make_synthetic_cache(8_000, 4, n_head_types=2, seed=5), "search")


def _draw(pop: ExitProblem, seed: int, n_fit: int, n_cal: int) -> Roles:
    rng = np.random.default_rng([seed, 3])
    return Roles(pop.take(rng.integers(0, pop.n_samples, n_fit)), pop.take(rng.integers(0, pop.n_samples, n_cal)),
                 "search", 0.5, seed)


def test_tempered_candidates_move_thresholds_toward_the_fit_top_and_keep_the_exits(population):
    roles = _draw(population, 0, 2_000, 2_000)
    front = DPEngine().run(roles.fit)
    configs = [c for c in front.configs if c.exits][:5]
    top = roles.fit.scores.max(axis=1)
    for t in _tempered(roles.fit, configs, (0.5,)):
        assert any(t.exits == c.exits for c in configs)
        src = next(c for c in configs if c.exits == t.exits and all(
            abs(b - (a + 0.5 * max(float(top[e]) - a, 0.0))) < 1e-12 for e, a, b in zip(c.exits, c.thresholds,
                                                                                        t.thresholds, strict=True)))
        assert all(b >= a for a, b in zip(src.thresholds, t.thresholds, strict=True))


def test_the_default_sequence_runs_from_the_most_expensive_down(population):
    roles = _draw(population, 1, 3_000, 3_000)
    ans = certify_drop(roles, 0.01)
    costs = [float(outcomes(roles.fit, c)[1].mean()) for c in ans.sequence]
    assert len(costs) > 3 and all(a > b for a, b in zip(costs, costs[1:], strict=False))
    assert ans.certificate is not None


def test_the_default_sequence_agrees_with_the_base_more_than_every_cheaper_candidate(population):
    roles = _draw(population, 2, 3_000, 3_000)
    fit = roles.fit
    ans = certify_drop(roles, 0.01)
    by_cost = certify_drop(roles, 0.01, order="cost")
    disc = [paired_losses(outcomes(fit, c)[0], fit.correct[fit.final_exit]).discordance for c in ans.sequence]
    assert all(a <= b for a, b in zip(disc, disc[1:], strict=False))  # expensive to cheap: disagreement only grows
    assert set(ans.sequence) <= set(by_cost.sequence) and len(ans.sequence) < len(by_cost.sequence)


def test_the_fallback_walk_goes_on_after_a_failure_at_the_levels_it_carries():
    outcome = {"a": True, "b": False, "c": True, "d": True, "e": False, "f": True}
    seen = []

    def passes(item, level):
        seen.append((item, round(level, 10)))
        return outcome[item]

    weights = [0.05, 0.01, 0.01, 0.01, 0.01, 0.01]
    passed = fallback_test(list("abcdef"), weights, passes)
    assert [(i, round(lv, 10)) for i, lv in passed] == [(0, 0.05), (2, 0.01), (3, 0.02), (5, 0.01)]
    assert seen == [("a", 0.05), ("b", 0.06), ("c", 0.01), ("d", 0.02), ("e", 0.03), ("f", 0.01)]
    # all of delta on the first: the fixed-sequence walk, which stops at the first failure
    fixed = fallback_test(list("abcdef"), [0.1, 0, 0, 0, 0, 0], lambda item, level: outcome[item])
    assert len(fixed) == fixed_sequence_test(list("abcdef"), lambda item: outcome[item]) == 1


def test_fallback_weights_sum_to_delta_with_most_on_the_first():
    for m in (1, 2, 50):
        w = fallback_weights(m, 0.1)
        assert len(w) == m and abs(sum(w) - 0.1) < 1e-12 and w[0] == max(w) and w[0] >= 0.08 - 1e-12


@pytest.mark.parametrize("procedure", ["fixed", "fallback"])
def test_the_procedures_are_valid_by_simulation(population, procedure):
    """Draws with replacement from a finite population are i.i.d. draws from it: the population drop of the
    answer exceeds the asked drop in at most delta of the draws (within Monte-Carlo error)."""
    base = population.base.accuracy
    asked, draws, delta = 0.01, 60, 0.1
    broken = 0
    for seed in range(draws):
        ans = certify_drop(_draw(population, seed, 1_500, 1_500), asked, delta=delta, procedure=procedure)
        broken += base - population.evaluate_one(ans.config).accuracy > asked
        if ans.certificate is not None and procedure == "fallback":
            assert 0 < ans.certificate.level <= delta
    assert broken / draws <= delta + 3 * np.sqrt(delta * (1 - delta) / draws)


def test_an_unknown_procedure_is_refused_by_name(population):
    with pytest.raises(SearchError, match="procedure 'graph': choose one of"):
        certify_drop(_draw(population, 0, 500, 500), 0.01, procedure="graph")
