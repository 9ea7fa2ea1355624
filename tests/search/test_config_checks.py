"""Configurations are checked where they enter (a file, a caller), never inside search loops: the ones an
engine builds from the problem's own exits are valid by construction (``ExitProblem.config``)."""
from __future__ import annotations

import pytest

from contract import ExitConfig
from data_cache.bundled import bundled_cache_path
from search import ExitProblem, SearchError, create_engine, list_engines
from search.pareto import main

_SMALL = {"nsga2": {"pop_size": 6, "n_gen": 3}, "optuna": {"n_trials": 12, "pop_size": 6}}


@pytest.fixture
def full_checks(monkeypatch) -> list[ExitConfig]:
    """Every configuration :meth:`ExitConfig.check` validates (calls it answers from memory left out)."""
    seen: list[ExitConfig] = []
    check = ExitConfig.check

    def counting(self, table):
        if self.__dict__.get("_checked_for") is not table:
            seen.append(self)
        return check(self, table)

    monkeypatch.setattr(ExitConfig, "check", counting)
    return seen


def test_one_max_drop_run_checks_no_configuration_the_engines_built(full_checks, capsys):
    if bundled_cache_path() is None:
        pytest.skip("no bundled cache")
    assert main(["--max-drop", "0.5", "--no-progress"]) == 0
    assert "certified" in capsys.readouterr().out
    assert full_checks == []


@pytest.mark.parametrize("name", list_engines())
def test_every_engine_builds_configurations_that_pass_the_check(small_problem, name):
    front = create_engine(name, **_SMALL.get(name, {})).run(small_problem, seed=0)
    assert len(front) > 1
    for c in front.configs:
        fresh = ExitConfig(c.exits, c.thresholds, c.score)   # not marked: the whole check runs
        assert fresh.check(small_problem.cache) == c


def test_a_callers_configuration_is_checked_once(small_problem, full_checks):
    config = ExitConfig((0,), (0.5,), small_problem.score)
    small_problem.evaluate_one(config)
    small_problem.evaluate_one(config)
    assert full_checks == [config]
    final = len(small_problem.cache.exits) - 1
    with pytest.raises(SearchError, match=f"exit index {final} is not an early exit"):
        small_problem.evaluate_one(ExitConfig((final,), (0.5,), small_problem.score))


def test_a_built_configuration_is_trusted_by_its_own_cache_only(small_problem, saver_cache, full_checks):
    config = small_problem.config([0], [0.5])
    small_problem.evaluate_one(config)
    ExitProblem(small_problem.cache, "holdout").evaluate_one(config)   # the same owner, another split
    assert full_checks == []
    ExitProblem(saver_cache).evaluate_one(config)                      # another cache: checked there
    assert full_checks == [config]
