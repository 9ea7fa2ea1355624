"""The certified drop query's sequence (search/pareto_testing.py): ordered on the fit part alone, most
expensive first, with tempered candidates between the fit front and the base model; valid by simulation."""
from __future__ import annotations

import numpy as np
import pytest

from data_cache.synthetic import make_synthetic_cache
from search import ExitProblem
from search.calibration import Roles
from search.engines.dp import DPEngine
from search.pareto_testing import _tempered, certify_drop, outcomes


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
                                                                                        t.thresholds)))
        assert all(b >= a for a, b in zip(src.thresholds, t.thresholds))


def test_the_default_sequence_runs_from_the_most_expensive_down(population):
    roles = _draw(population, 1, 3_000, 3_000)
    ans = certify_drop(roles, 0.01)
    costs = [float(outcomes(roles.fit, c)[1].mean()) for c in ans.sequence]
    assert len(costs) > 3 and all(a > b for a, b in zip(costs, costs[1:]))
    assert ans.certificate is not None


def test_the_default_procedure_is_valid_by_simulation(population):
    """Draws with replacement from a finite population are i.i.d. draws from it: the population drop of the
    answer exceeds the asked drop in at most delta of the draws (within Monte-Carlo error)."""
    base = population.base.accuracy
    asked, draws, delta = 0.01, 60, 0.1
    broken = 0
    for seed in range(draws):
        ans = certify_drop(_draw(population, seed, 1_500, 1_500), asked, delta=delta)
        broken += base - population.evaluate_one(ans.config).accuracy > asked
    assert broken / draws <= delta + 3 * np.sqrt(delta * (1 - delta) / draws)
