"""What every registered engine shares (``BaseEngine.run``)."""
from __future__ import annotations

import pytest

from data_cache.synthetic import make_synthetic_cache
from search import Budget, ExitConfig, ExitProblem, SearchError, create_engine, list_engines

_SMALL = {"nsga2": {"pop_size": 4, "n_gen": 2}, "optuna": {"n_trials": 4, "pop_size": 4}}


@pytest.fixture(scope="module")
def no_early_exit():
    return ExitProblem(make_synthetic_cache(400, 0, seed=0))


@pytest.mark.parametrize("name", list_engines())
def test_without_early_exits_every_engine_returns_the_base_model(no_early_exit, name):
    """Regression: dp returned an empty front, nsga2 and optuna a ValueError traceback from pymoo /
    optuna, global and geometric a SearchError about head types."""
    front = create_engine(name, **_SMALL.get(name, {})).run(no_early_exit, seed=0)
    assert front.configs == [ExitConfig((), (), "max_prob")]
    assert front.F.tolist() == [[no_early_exit.base.error, 1.0]]
    assert front.message == "no early exits: only the base model"


@pytest.mark.parametrize("name", ["nsga2", "optuna"])
def test_without_early_exits_population_engines_keep_their_constraints(no_early_exit, name):
    assert len(create_engine(name, max_drop=0.0, **_SMALL[name]).run(no_early_exit)) == 1
    front = create_engine(name, max_cost=0.5, **_SMALL[name]).run(no_early_exit)
    assert len(front) == 0 and front.message.endswith("no feasible configuration found")


@pytest.mark.parametrize("limits,match", [
    ({"max_evals": float("nan")}, "evaluation budget must be an integer >= 1"),   # was a ValueError traceback
    ({"max_evals": float("inf")}, "evaluation budget must be an integer >= 1"),   # was an OverflowError
    ({"max_evals": "100"}, "evaluation budget must be an integer >= 1"),          # was a ValueError
    ({"max_evals": 2.5}, "evaluation budget must be an integer >= 1"),
    ({"max_seconds": "5"}, "time limit must be > 0 seconds"),                     # was a TypeError
    ({"max_seconds": float("nan")}, "time limit must be > 0 seconds"),
])
def test_a_bad_budget_is_one_line(limits, match):
    with pytest.raises(SearchError, match=match):
        Budget(**limits)
