"""The exhaustive engine: grid, counts, size guard, and agreement with brute force."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from data_cache.synthetic import make_synthetic_cache
from search import ExitConfig, ExitProblem, SearchError, create_engine, run_search
from search.engines.exhaustive import _Enumerator, threshold_levels
from search.front import non_dominated


def grid_configs(problem, levels):
    grids = [threshold_levels(problem.scores[e], levels, 0.0, 1.0) for e in range(problem.n_exits - 1)]
    options = [[None] + [(e, t) for e in ex for t in grids[e]] for ex in problem.position_exits]
    out = []
    for combo in itertools.product(*options):
        picked = [o for o in combo if o is not None]
        out.append(ExitConfig(tuple(e for e, _ in picked), tuple(float(t) for _, t in picked)))
    return grids, out


def weakly_dominated_by(F, G, tol=1e-12) -> bool:
    """Every row of F is weakly dominated by some row of G."""
    return all(np.any((G[:, 0] <= f[0] + tol) & (G[:, 1] <= f[1] + tol)) for f in F)


def test_threshold_levels():
    s = np.array([0.3, 0.5, 0.5, 0.9, 0.2, 0.7], dtype=np.float32)
    g = threshold_levels(s, 4, 0.0, 1.0)
    assert g.dtype == np.float32 and g[0] == 0.0 and np.all(np.diff(g) > 0) and g[-1] < s.max()
    assert len(g) <= 4
    np.testing.assert_array_equal(threshold_levels(s, None, 0.0, 1.0), np.float32([0.0, 0.2, 0.3, 0.5, 0.7]))


@pytest.mark.parametrize("saver", [False, True])
def test_fast_path_equals_the_evaluator_on_every_combination(saver):
    problem = ExitProblem(make_synthetic_cache(300, 2, n_head_types=2, saver=saver, seed=2))
    grids, configs = grid_configs(problem, 3)
    enum = _Enumerator(problem, grids)
    assert enum.count() == len(configs)
    F, choice = enum.run(None)
    assert F.shape == (len(configs), 2) and len({tuple(r) for r in choice}) == len(configs)
    decoded = [enum.decode(r) for r in choice]
    np.testing.assert_allclose(F, problem.evaluate(decoded), rtol=1e-12, atol=1e-12)
    front = create_engine("exhaustive", levels=3).run(problem)
    expected = problem.evaluate(configs)
    np.testing.assert_allclose(front.F, expected[non_dominated(expected)], rtol=1e-12, atol=1e-12)


def test_counts_three_positions_two_heads_32_levels(small_problem):
    problem = ExitProblem(small_problem.cache)
    front = run_search(problem, "exhaustive")
    grids = [threshold_levels(problem.scores[e], 32, 0.0, 1.0) for e in range(problem.n_exits - 1)]
    expected = np.prod([1 + sum(len(grids[e]) for e in ex) for ex in problem.position_exits])
    assert expected <= 65 ** 3 and expected > 40 ** 3
    assert front.n_evals == expected == problem.n_evals
    assert str(expected) in front.message
    assert len(front) > 10 and np.all(np.diff(front.F[:, 1]) > 0) and np.all(np.diff(front.F[:, 0]) < 0)


def test_exact_grid_dominates_every_other_configuration():
    problem = ExitProblem(make_synthetic_cache(60, 2, n_head_types=2, seed=8))
    exact = create_engine("exhaustive", levels=None).run(problem)
    rng = np.random.default_rng(0)
    configs = []
    for _ in range(300):
        exits, thr = [], []
        for ex in problem.position_exits:
            c = rng.integers(-1, len(ex))
            if c >= 0:
                exits.append(ex[c])
                thr.append(float(rng.choice([rng.random(), problem.scores[ex[c]][rng.integers(problem.n_samples)]])))
        configs.append(ExitConfig(tuple(exits), tuple(thr)))
    assert weakly_dominated_by(problem.evaluate(configs), exact.F)
    for method in ("global", "geometric", "greedy", "circular"):
        assert weakly_dominated_by(run_search(problem, method).F, exact.F), method


def test_size_guard_names_the_size():
    problem = ExitProblem(make_synthetic_cache(200, 5, n_head_types=2, seed=0))
    with pytest.raises(SearchError, match=r"5 positions with .* make 1\.\d+e\+09 configurations.*max_configs=2000000"):
        run_search(problem, "exhaustive")
    with pytest.raises(SearchError, match="max_configs=10"):
        create_engine("exhaustive", levels=2, max_configs=10).run(problem)


def test_no_early_exit_gives_the_base_model():
    problem = ExitProblem(make_synthetic_cache(50, 0, seed=0))
    front = run_search(problem, "exhaustive")
    assert front.configs == [ExitConfig()]
    np.testing.assert_allclose(front.F, [[1 - problem.base.accuracy, 1.0]])


def test_bad_options(small_problem):
    with pytest.raises(SearchError, match="`levels` == 0, must be >= 1"):
        create_engine("exhaustive", levels=0).run(small_problem)
    with pytest.raises(SearchError, match="method 'exhaustive'.*levls"):
        create_engine("exhaustive", levls=3)
