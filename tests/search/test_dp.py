"""The exact DP engine: stated objectives are exact, it beats the exhaustive grid, steps are optimal."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from data_cache.synthetic import make_synthetic_cache
from search import ExitConfig, ExitProblem, SearchError, create_engine, run_search
from search.engines.dp import DPSolver
from search.indicators import HV


@pytest.mark.parametrize("seed,saver", [(0, False), (1, True), (2, False)])
def test_reported_objectives_equal_independent_evaluation(seed, saver):
    problem = ExitProblem(make_synthetic_cache(3000, 5, n_head_types=2, saver=saver, seed=seed))
    front = run_search(problem, "dp")
    assert len(front) >= 50
    np.testing.assert_allclose(problem.evaluate(front.configs), front.F, rtol=0, atol=1e-12)
    assert np.all(np.diff(front.F[:, 1]) > 0) and np.all(np.diff(front.F[:, 0]) < 0)  # a Pareto set


@pytest.mark.parametrize("seed,n_positions,saver", [(0, 3, False), (1, 3, False), (2, 2, True), (3, 1, False)])
def test_dp_reaches_exhaustive_hypervolume(seed, n_positions, saver):
    problem = ExitProblem(make_synthetic_cache(3000, n_positions, n_head_types=2, saver=saver, seed=seed))
    exhaustive = run_search(problem, create_engine("exhaustive", levels=32))
    dp = run_search(problem, create_engine("dp", max_configs=None))
    assert HV()(dp.F) >= 0.999 * HV()(exhaustive.F)


def test_weighted_steps_are_coordinate_optimal():
    """After solving at one lam, no single position's head or threshold change improves the objective."""
    problem = ExitProblem(make_synthetic_cache(1500, 3, n_head_types=2, seed=5))
    solver = DPSolver(problem)
    slots, taus = solver.empty_state()
    lam = 3.0
    solver.solve(slots, taus, solver.weighted_select(lam))
    base = problem.costs.base_cost

    def objective(s, t):
        err, cost = solver.totals(s, t)
        return cost / (problem.n_samples * base) + lam * err / problem.n_samples

    best = objective(slots, taus)
    for j, exits in enumerate(problem.position_exits):
        for slot in [-1] + list(range(len(exits))):
            candidates = [1.0] if slot < 0 else np.unique(problem.scores[exits[slot]])[::7].tolist() + [0.0]
            for t in candidates:
                s, tt = slots.copy(), taus.copy()
                s[j], tt[j] = slot, t
                assert objective(s, tt) >= best - 1e-12


def test_ties_at_thresholds_are_kept_together():
    """Scores rounded to few values: every reported point still evaluates exactly."""
    cache = make_synthetic_cache(2000, 3, seed=4)
    probs = np.round(np.asarray(cache.topk_probs("search")) * 8) / 8
    cache._arrays["search"]["topk_probs.npy"] = probs.astype(np.float32)
    problem = ExitProblem(cache)
    front = run_search(problem, create_engine("dp", max_configs=None))
    np.testing.assert_allclose(problem.evaluate(front.configs), front.F, atol=1e-12)
    for config in front.configs:
        for e, t in zip(config.exits, config.thresholds, strict=True):
            assert not np.any(problem.scores[e] == t)  # thresholds sit strictly between observed scores


def test_deterministic_and_thinned():
    problem = ExitProblem(make_synthetic_cache(3000, 4, n_head_types=2, seed=7))
    a = run_search(problem, create_engine("dp", max_configs=60))
    b = run_search(problem, create_engine("dp", max_configs=60))
    assert len(a) <= 60 and a.configs == b.configs
    assert a.n_evals > 0 and "sweeps" in a.message


def test_no_early_exit_gives_the_base_model():
    problem = ExitProblem(make_synthetic_cache(500, 0, seed=0))
    front = run_search(problem, "dp")
    assert front.configs == [ExitConfig()] or all(c.exits == () for c in front.configs)


@pytest.mark.parametrize("scores", [np.array([0.3, 0.9, 0.3, 0.0, 1.0, 0.5], np.float32),
                                    np.array([-2.0, -0.5, -0.0, 0.0, -2.0, -1e-30], np.float32)])
def test_descending_order_is_a_stable_sort(scores):
    from search.engines.dp import descending_order
    np.testing.assert_array_equal(descending_order(scores), np.argsort(-scores.astype(np.float64), kind="stable"))


@pytest.mark.parametrize("options,match", [
    ({"max_configs": 0}, "`max_configs` == 0, must be >= 1"),        # was an IndexError traceback
    ({"n_lams": 1.5}, "`n_lams` must be an integer"),                  # was a TypeError from numpy
    ({"lams": []}, "`lams` must be a non-empty list"),                 # was an empty front, silently
    ({"lams": [float("nan")]}, "finite numbers >= 0"),
    ({"lams": [-1.0]}, "finite numbers >= 0"),
    ({"per_curve": 0}, "`per_curve` == 0, must be >= 1"),
])
def test_bad_options_are_one_line(options, match):
    problem = ExitProblem(make_synthetic_cache(400, 2, seed=0))
    with pytest.raises(SearchError, match=match):
        run_search(problem, create_engine("dp", **options))


def test_one_cut_per_curve_warns_nothing():
    """Regression: per_curve=1 divided by zero in the spread of kept cuts (a RuntimeWarning)."""
    problem = ExitProblem(make_synthetic_cache(1000, 3, n_head_types=2, seed=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        front = run_search(problem, create_engine("dp", per_curve=1, max_configs=1))
    assert len(front) == 1
    np.testing.assert_allclose(problem.evaluate(front.configs), front.F, atol=1e-12)
