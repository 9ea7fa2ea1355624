"""The ``nsga2`` engine (pymoo): determinism, budgets, constraints, dp seeding, bad input."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from search import Budget, SearchError, create_engine, run_search
from search.indicators import hypervolume


@pytest.mark.parametrize("encoding", ["quantile", "float"])
def test_deterministic_with_a_seed(small_problem, encoding):
    runs = [create_engine("nsga2", pop_size=20, encoding=encoding).run(small_problem, budget=Budget(max_evals=300),
                                                                       seed=seed) for seed in (3, 3, 4)]
    a, b, c = runs
    assert a.configs == b.configs and np.array_equal(a.F, b.F)
    assert not (a.configs == c.configs and np.array_equal(a.F, c.F))
    assert a.method == "nsga2" and a.params["encoding"] == encoding and a.n_evals == 300


def test_reported_objectives_are_exact_and_a_pareto_set(small_problem):
    front = run_search(small_problem, create_engine("nsga2", pop_size=30), budget=Budget(max_evals=600), seed=0)
    np.testing.assert_allclose(small_problem.evaluate(front.configs), front.F, rtol=0, atol=1e-12)
    assert np.all(np.diff(front.F[:, 1]) > 0) and np.all(np.diff(front.F[:, 0]) < 0)
    for cfg in front.configs:
        cfg.check(small_problem.cache)


def test_budget_generations_and_history(small_problem):
    engine = create_engine("nsga2", pop_size=40)
    front = engine.run(small_problem, budget=Budget(max_evals=250), seed=1)  # the last generation is cut short
    assert front.n_evals == 250
    evals, hv = zip(*engine.history_, strict=True)
    assert evals[-1] == 250 and list(evals) == sorted(evals)
    assert np.all(np.diff(hv) >= 0) and hv[-1] == pytest.approx(hypervolume(front.F))
    front = create_engine("nsga2", pop_size=20, n_gen=3).run(small_problem, seed=1)
    assert front.n_evals <= 60 and "3 generations" in front.message


def test_constraints_hold_for_returned_configs(small_problem):
    base = small_problem.base
    front = create_engine("nsga2", pop_size=30, max_drop=0.01, max_cost=0.85).run(
        small_problem, budget=Budget(max_evals=900), seed=2)
    assert len(front) > 0
    F = small_problem.evaluate(front.configs)
    assert np.all(1 - F[:, 0] >= base.accuracy - 0.01 - 1e-12)
    assert np.all(F[:, 1] <= 0.85 + 1e-12)


def test_infeasible_constraints_give_an_empty_front(small_problem):
    front = create_engine("nsga2", pop_size=10, max_drop=0.0, max_cost=0.05).run(
        small_problem, budget=Budget(max_evals=50), seed=0)
    assert len(front) == 0 and "no feasible configuration" in front.message


def test_seed_with_dp(small_problem):
    """The dp configurations put into the first population are never lost (the archive keeps them)."""
    pop = 30
    dp = run_search(small_problem, "dp")
    pick = np.unique(np.linspace(0, len(dp) - 1, pop).round().astype(int))
    front = create_engine("nsga2", pop_size=pop, seed_with_dp=True).run(small_problem, budget=Budget(max_evals=90),
                                                                        seed=0)
    assert "seeded with" in front.message and front.n_evals == 90
    assert hypervolume(front.F) >= hypervolume(dp.F[pick]) - 1e-12


def test_seed_with_dp_refused_when_dp_is_missing(small_problem, monkeypatch):
    from search.engines import _population

    def missing(name):
        raise SearchError(f"unknown method {name!r}")

    monkeypatch.setattr(_population, "engine_class", missing)
    with pytest.raises(SearchError, match="seed_with_dp needs the 'dp' engine"):
        create_engine("nsga2", seed_with_dp=True).run(small_problem, budget=Budget(max_evals=10))


@pytest.mark.parametrize("opts,match", [({"pop_size": 1}, "pop_size"), ({"pop_size": 2.5}, "pop_size"),
                                        ({"n_gen": 0}, "n_gen"), ({"encoding": "grid"}, "unknown encoding"),
                                        ({"max_drop": 2.0}, "max_drop"), ({"max_cost": 0}, "max_cost")])
def test_bad_options(small_problem, opts, match):
    with pytest.raises(SearchError, match=match):
        create_engine("nsga2", **opts).run(small_problem, budget=Budget(max_evals=10))


def test_unknown_option_and_zero_budget(small_problem):
    with pytest.raises(SearchError, match="method 'nsga2'"):
        create_engine("nsga2", sampler="tpe")
    with pytest.raises(SearchError, match="evaluation budget"):
        create_engine("nsga2").run(small_problem, budget=Budget(max_evals=0))


def test_missing_pymoo_is_one_clear_line(small_problem, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymoo.algorithms.moo.nsga2", None)
    with pytest.raises(SearchError, match=r"engine 'nsga2' needs pymoo: pip install pymoo"):
        create_engine("nsga2").run(small_problem, budget=Budget(max_evals=10))
