"""A cap on the exits a configuration enables (``max_exits``): dp against brute force for every K, the other
engines' repair, the queries, and the command line's checks."""
from __future__ import annotations

import numpy as np
import pytest

from data_cache.synthetic import make_synthetic_cache
from search import ExitProblem, SearchError, create_engine, run_search
from search.engines._cap import cap_config
from search.indicators import HV
from search.pareto import main
from search.queries import cheapest_within_drop, most_accurate_within_budget


@pytest.fixture(scope="module", params=[(0, 3, False), (2, 2, True), (4, 4, False)], ids=["3pos", "saver", "4pos"])
def problem(request):
    seed, n_positions, saver = request.param
    return ExitProblem(make_synthetic_cache(3000, n_positions, n_head_types=2, saver=saver, seed=seed))


def test_capped_dp_matches_brute_force_for_every_k(problem):
    """For every K the capped dp front holds only configurations with <= K exits, its numbers are exact, and
    it reaches the hypervolume of brute force under the same cap (exhaustive, 16 levels per exit)."""
    for k in range(1, problem.n_positions + 1):
        brute = run_search(problem, create_engine("exhaustive", levels=16, max_exits=k))
        dp = run_search(problem, create_engine("dp", max_configs=None), max_exits=k)
        assert max(len(c.exits) for c in dp.configs) <= k
        assert max(len(c.exits) for c in brute.configs) <= k
        np.testing.assert_allclose(problem.evaluate(dp.configs), dp.F, rtol=0, atol=1e-12)
        assert HV()(dp.F) >= 0.999 * HV()(brute.F), k
        assert dp.params["max_exits"] == k


def test_the_cap_binds_and_uncapped_dp_is_unchanged():
    problem = ExitProblem(make_synthetic_cache(3000, 5, n_head_types=1, seed=1))
    free = run_search(problem, "dp")
    assert max(len(c.exits) for c in free.configs) > 1
    one = run_search(problem, "dp", max_exits=1)
    assert {len(c.exits) for c in one.configs} <= {0, 1}
    assert HV()(one.F) < HV()(free.F)
    again = run_search(problem, create_engine("dp", max_exits=problem.n_positions))
    np.testing.assert_array_equal(np.sort(again.F, axis=0), np.sort(free.F, axis=0))


@pytest.mark.parametrize("method", ["global", "greedy"])
def test_other_engines_are_repaired(method):
    problem = ExitProblem(make_synthetic_cache(2000, 5, n_head_types=1, seed=3))
    front = run_search(problem, method, max_exits=2)
    assert front.configs and max(len(c.exits) for c in front.configs) <= 2
    np.testing.assert_allclose(problem.evaluate(front.configs), front.F, rtol=0, atol=1e-12)


def test_repair_keeps_the_exits_serving_most_samples():
    problem = ExitProblem(make_synthetic_cache(2000, 4, n_head_types=1, seed=3))
    config = run_search(problem, "global").configs[len(run_search(problem, "global")) // 2]
    assert len(config.exits) == 4
    capped = cap_config(problem, config, 2)
    served = problem.evaluate_one(config).exit_fractions
    kept = sorted(sorted(config.exits, key=lambda e: -served[e])[:2])
    assert capped.exits == tuple(kept)
    assert capped.thresholds == tuple(t for e, t in zip(config.exits, config.thresholds, strict=True) if e in kept)


def test_queries_respect_the_cap():
    problem = ExitProblem(make_synthetic_cache(3000, 5, n_head_types=1, seed=1))
    free = cheapest_within_drop(problem, 1.0)
    assert len(free.config.exits) > 1
    capped = cheapest_within_drop(problem, 1.0, max_exits=1)
    assert len(capped.config.exits) <= 1
    assert capped.evaluation.relative_cost >= free.evaluation.relative_cost - 1e-12
    assert len(most_accurate_within_budget(problem, 0.6, max_exits=1).config.exits) <= 1


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, 6])
def test_bad_caps_are_refused(bad):
    problem = ExitProblem(make_synthetic_cache(500, 5, n_head_types=1, seed=0))
    with pytest.raises(SearchError, match="max_exits"):
        run_search(problem, "dp", max_exits=bad)


def test_command_line(capsys, tmp_path):
    out = tmp_path / "front.json"
    assert main(["--methods", "dp,greedy", "--max-exits", "2", "--max-drop", "0.5", "--no-progress",
                 "--export", str(out)]) == 0
    import json
    doc = json.loads(out.read_text())
    assert max(len(c["exits"]) for c in doc["configs"]) <= 2
    text = capsys.readouterr().out
    assert "certified" in text
    with pytest.raises(SystemExit) as exc:
        main(["--max-exits", "0"])
    assert exc.value.code == 2
    assert main(["--methods", "dp", "--max-exits", "99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: --max-exits 99 is above the number of exit positions (8); choose 1 to 8"


def test_repair_keeps_each_exits_own_rule():
    """Regression: the repair rebuilt a capped configuration with the problem's default score, so a configuration
    mixing rules lost its per-exit rules (and was scored with the wrong one)."""
    problem = ExitProblem(make_synthetic_cache(2000, 4, n_head_types=1, seed=3), rules=("margin",))
    base = run_search(problem, "global").configs[len(run_search(problem, "global")) // 2]
    rules = ("margin", "max_prob", "margin", "max_prob")
    lo = {r: problem.rule_objects[r].threshold_range()[0] for r in set(rules)}
    thresholds = [max(t, lo[r]) for t, r in zip(base.thresholds, rules, strict=True)]
    config = problem.config(base.exits, thresholds, rules=rules)
    capped = cap_config(problem, config, 2)
    served = problem.evaluate_one(config).exit_fractions
    kept = sorted(sorted(config.exits, key=lambda e: -served[e])[:2])
    assert capped.exits == tuple(kept)
    assert capped.rule_names == tuple(r for e, r in zip(config.exits, rules, strict=True) if e in kept)
