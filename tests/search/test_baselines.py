"""Baselines: global, geometric (MSDNet), greedy (DyCE onepass)."""
from __future__ import annotations

import numpy as np
import pytest

from search import (
    Budget,
    ExitConfig,
    ExitProblem,
    SearchError,
    create_engine,
    list_engines,
    run_search,
)
from search.engines.baselines import geometric_thresholds, select_exits

BASELINES = ("global", "geometric", "greedy")


def is_float32(t: float) -> bool:
    return float(np.float32(t)) == t


@pytest.mark.parametrize("method", BASELINES)
def test_sensible_deterministic_fronts(small_problem, saver_cache, method):
    for problem in (small_problem, ExitProblem(saver_cache)):
        front = run_search(problem, method, seed=0)
        assert len(front) >= 3 and front.method == method
        assert np.all((front.F[:, 0] >= 0) & (front.F[:, 0] <= 1))
        assert np.all((front.F[:, 1] > 0) & (front.F[:, 1] <= 1.2))
        assert front.F[:, 1].min() < 0.7 and front.F[:, 0].min() < 1 - problem.base.accuracy + 0.02
        for c in front.configs:
            c.check(problem.cache)
            assert all(is_float32(t) for t in c.thresholds)
        again = run_search(problem, method, seed=123)
        np.testing.assert_array_equal(again.F, front.F)
        assert again.configs == front.configs
        assert front.params == create_engine(method).get_params()


def test_registered():
    assert set(BASELINES) <= set(list_engines())


def test_global_shares_one_threshold_over_the_cheapest_heads(small_problem):
    front = run_search(small_problem, "global")
    cheapest = tuple(min(ex, key=small_problem.costs.standalone_cost) for ex in small_problem.position_exits)
    for c in front.configs:
        assert c.exits == cheapest and len(set(c.thresholds)) == 1
    assert front.n_evals >= len(front)


def test_global_head_and_position_options(small_problem):
    def heads(f):
        return {small_problem.cache.exits[e].head for c in f.configs for e in c.exits}
    assert heads(create_engine("global", head="mlp1").run(small_problem)) == {"mlp1"}
    assert heads(create_engine("global", head=0).run(small_problem)) == {"linear"}
    assert heads(create_engine("global", head="each", n_thresholds=30).run(small_problem)) == {"linear", "mlp1"}
    front = create_engine("global", positions=[0, 2]).run(small_problem)
    assert {tuple(small_problem.cache.exits[e].position for e in c.exits) for c in front.configs} == {(0, 2)}
    assert len(select_exits(small_problem, 1, [1])) == 1


@pytest.mark.parametrize("opts, match", [
    ({"head": "conv"}, "head type"), ({"head": 7}, "stands at none"), ({"head": -1}, "must be >= 0"),
    ({"head": 1.5}, "`head` must be"), ({"positions": [9]}, "`positions`: 9 is not an early exit position"),
    ({"n_thresholds": 0}, "`n_thresholds` == 0"), ({"n_thresholds": 2.5}, "must be an integer"),
])
def test_global_bad_options(small_problem, opts, match):
    with pytest.raises(SearchError, match=match):
        create_engine("global", **opts).run(small_problem)


def test_geometric_fractions_follow_q(small_problem):
    exits = select_exits(small_problem, None)
    scores = small_problem.scores[exits]
    n = small_problem.n_samples
    for q in (0.5, 1.0, 2.0):
        thr = geometric_thresholds(scores, q, 0.0, 1.0)
        frac = np.array(small_problem.evaluate_one(ExitConfig(tuple(exits), tuple(thr))).exit_fractions)
        p = q ** np.arange(1, len(exits) + 2)
        p /= p.sum()
        assert np.all(np.abs(frac - p) <= 2.0 / n + 0.01), (q, frac, p)   # ties may keep a few back
    # the whole grid spans cheap to accurate
    front = run_search(small_problem, "geometric")
    assert front.F[:, 1].min() < 0.45 and front.F[:, 1].max() > 0.6


@pytest.mark.parametrize("opts, match", [({"n_q": 0}, "`n_q`"), ({"q_min": 0.0}, "`q_min`"),
                                         ({"q_min": 2.0, "q_max": 1.0}, "`q_max` == 1.0, must be >= 2.0")])
def test_geometric_bad_options(small_problem, opts, match):
    with pytest.raises(SearchError, match=match):
        create_engine("geometric", **opts).run(small_problem)


def test_greedy_extremes(small_problem):
    acc_only = create_engine("greedy", lam_min=1.0, lam_max=1.0).run(small_problem)
    assert acc_only.F[:, 0].min() <= 1 - small_problem.base.accuracy
    cost_only = create_engine("greedy", lam_min=0.0, lam_max=0.0).run(small_problem)
    first = min(small_problem.position_exits[0], key=small_problem.costs.standalone_cost)
    assert cost_only.F[0, 1] < 1.2 * small_problem.costs.standalone_cost(first) / small_problem.costs.base_cost


def test_greedy_respects_the_budget(small_problem):
    calls = []
    front = run_search(small_problem, "greedy", budget=Budget(max_evals=60), callback=lambda e, p: calls.append(1))
    assert "budget exhausted" in front.message and 60 <= front.n_evals < 200
    assert len(front) >= 1 and len(calls) >= 1
    full = run_search(small_problem, "greedy")
    assert full.n_evals > 1000 and full.message == ""


def test_greedy_bad_options(small_problem):
    with pytest.raises(SearchError, match="`lam_max` == 0.4, must be >= 0.5"):
        create_engine("greedy", lam_max=0.4).run(small_problem)
    with pytest.raises(SearchError, match="`lam_step` == 0"):
        create_engine("greedy", lam_step=0).run(small_problem)


def test_budgeted_grid_baselines_still_span(small_problem):
    front = run_search(small_problem, "global", budget=Budget(max_evals=20))
    assert front.n_evals <= 32 and front.message.startswith("budget exhausted after 32 of ")
    assert run_search(small_problem, "geometric").message == ""
    assert front.F[:, 1].min() < 0.4 and front.F[:, 0].min() < 1 - small_problem.base.accuracy + 0.03


def test_circular_never_worse_than_onepass(small_problem):
    for lam in (0.6, 0.9):
        def J(F, lam=lam):
            return lam * F[:, 0] + (1 - lam) * F[:, 1]
        one = create_engine("greedy", lam_min=lam, lam_max=lam).run(small_problem)
        circ = create_engine("circular", lam_min=lam, lam_max=lam, max_rounds=5).run(small_problem)
        assert J(circ.F).min() <= J(one.F).min() + 1e-12
    with pytest.raises(SearchError, match="`max_rounds` == -1"):
        create_engine("circular", max_rounds=-1).run(small_problem)


@pytest.mark.parametrize("score", ["margin", "neg_entropy"])
def test_other_score_kinds(make_cache, chain, score):
    cache = make_cache(*chain(3), n_samples=200, n_classes=6, seed=1, logits=True)
    problem = ExitProblem(cache, score=score)
    for method, opts in [("global", {}), ("geometric", {}), ("greedy", {"lam_step": 0.1}),
                         ("exhaustive", {"levels": 5})]:
        front = create_engine(method, **opts).run(problem)
        assert len(front) >= 1 and front.n_evals >= 1, method
        for c in front.configs:
            assert c.score == score
            c.check(cache)


def test_snap_threshold_stays_inside_the_range():
    from search.engines.baselines import snap_threshold

    lo = -float(np.log(6))
    for t in (lo, lo - 1e-3, np.float32(lo), 0.0, 1e-9, 0.25):
        v = snap_threshold(t, lo, 0.0)
        assert lo <= v <= 0.0 and is_float32(v)
