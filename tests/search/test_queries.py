"""Constrained queries on one split (their certified versions: test_pareto_testing.py)."""
from __future__ import annotations

import pytest

from data_cache.synthetic import make_synthetic_cache
from search import ExitProblem, SearchError, create_engine, run_search
from search.queries import cheapest_within_drop, most_accurate_within_budget


@pytest.fixture(scope="module")
def small():
    problem = ExitProblem(make_synthetic_cache(4000, 3, n_head_types=2, seed=11))
    return problem, run_search(problem, create_engine("exhaustive", levels=32))


@pytest.mark.parametrize("points", [0.0, 0.5, 2.0])
def test_cheapest_within_drop_holds_and_beats_the_grid(small, points):
    problem, grid = small
    ans = cheapest_within_drop(problem, points)
    drop = points / 100
    assert ans.evaluation.accuracy >= problem.base.accuracy - drop - 1e-12
    ok = grid.accuracy >= problem.base.accuracy - drop - 1e-12
    assert ans.evaluation.relative_cost <= grid.relative_cost[ok].min() + 0.01


@pytest.mark.parametrize("budget", [0.3, 0.5, 0.8])
def test_most_accurate_within_budget_holds(small, budget):
    problem, grid = small
    ans = most_accurate_within_budget(problem, budget)
    assert ans.evaluation.relative_cost <= budget + 1e-12
    ok = grid.relative_cost <= budget
    if ok.any():
        assert ans.evaluation.accuracy >= grid.accuracy[ok].max() - 0.01


def test_unreachable_budget_says_what_is_reachable(small):
    problem, _ = small
    with pytest.raises(SearchError, match="cheapest reachable is"):
        most_accurate_within_budget(problem, 0.01)


def test_bad_query_values():
    problem = ExitProblem(make_synthetic_cache(200, 2, seed=0))
    with pytest.raises(SearchError, match="max_drop"):
        cheapest_within_drop(problem, -0.1)
    with pytest.raises(SearchError, match="max_drop: 0.005 looks like a fraction.*pass 0.5"):
        cheapest_within_drop(problem, 0.005)
    with pytest.raises(SearchError, match="max_drop: 50 points is above 20"):
        cheapest_within_drop(problem, 50)
    with pytest.raises(SearchError, match="budget"):
        most_accurate_within_budget(problem, float("nan"))
