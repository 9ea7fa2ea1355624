"""SplitEvaluator: chunked, vectorised exact scoring equals the in-memory evaluation, ties included."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_cache import open_cache, save_cache
from data_cache.synthetic import make_synthetic_cache
from search import ExitConfig, ExitProblem, run_search
from search.exact import SplitEvaluator
from search.scores import score_range
from search.standalone import oracle_bound, standalone_table


def _tied(cache, levels: int = 6):
    """The cache with every probability rounded to a few values: many samples tie at any threshold."""
    for split in ("search", "holdout"):
        probs = np.asarray(cache.topk_probs(split))
        cache._arrays[split]["topk_probs.npy"] = (np.round(probs * levels) / levels).astype(np.float32)
    return cache


@pytest.fixture(scope="module")
def tied_problem():
    return ExitProblem(_tied(make_synthetic_cache(3000, 4, n_head_types=2, seed=8)), "holdout")


def _configs(problem, rng, n: int) -> list[ExitConfig]:
    """Random configurations whose thresholds often sit exactly on score values (ties at the cut)."""
    out = [ExitConfig(score=problem.score)]
    values = np.unique(problem.scores)
    lo, hi = score_range(problem.score, problem.cache.n_classes)
    for _ in range(n):
        exits, thr = [], []
        for ex in problem.position_exits:
            if rng.random() < 0.6:
                exits.append(int(rng.choice(ex)))
                t = float(rng.choice(values)) if rng.random() < 0.5 else lo + (hi - lo) * float(rng.random())
                thr.append(t)
        out.append(ExitConfig(tuple(exits), tuple(thr), problem.score))
    return out


@pytest.mark.parametrize("chunk_size", [7, 63, 64, 65, 10_000])
def test_streamed_equals_in_memory(tied_problem, tmp_path_factory, chunk_size):
    path = tmp_path_factory.mktemp("exact") / "c"
    if not path.exists():
        save_cache(path, tied_problem.cache)
    problem = tied_problem
    configs = _configs(problem, np.random.default_rng(chunk_size), 60)
    configs += configs[:5]                                          # repeats are answered from memory
    for ev in (SplitEvaluator.like(problem, "holdout", chunk_size=chunk_size),
               SplitEvaluator.of_problem(problem, chunk_size=chunk_size),
               SplitEvaluator(open_cache(path), "holdout", costs=problem.costs, score=problem.score,
                              objective=problem.objective, chunk_size=chunk_size)):
        got = ev.evaluations(configs)
        assert got == [problem.evaluate_one(c) for c in configs]
        np.testing.assert_array_equal(ev.evaluate(configs), problem.evaluate(configs))
        for c in configs[:10]:
            counts, right = ev.exit_outcomes(c)
            exp_counts, exp_right = problem.exit_outcomes(c)
            assert np.array_equal(counts, exp_counts) and np.array_equal(right, exp_right)
        assert ev.base == problem.base
        assert standalone_table(ev) == standalone_table(problem)
        assert oracle_bound(ev) == pytest.approx(oracle_bound(problem), rel=1e-12)


def test_a_dp_front_on_both_splits():
    cache = make_synthetic_cache(6000, 5, n_head_types=3, saver=True, seed=2)
    problem = ExitProblem(cache)
    front = run_search(problem, "dp")
    holdout = problem.on_split("holdout")
    assert SplitEvaluator.of_problem(problem).evaluations(front.configs) == \
        [problem.evaluate_one(c) for c in front.configs]
    assert SplitEvaluator.like(problem, "holdout", chunk_size=999).evaluations(front.configs) == \
        [holdout.evaluate_one(c) for c in front.configs]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), chunk_size=st.integers(16, 1500), n_configs=st.integers(0, 40))
def test_property_equal_to_in_memory(tied_problem, seed, chunk_size, n_configs):
    configs = _configs(tied_problem, np.random.default_rng(seed), n_configs)
    ev = SplitEvaluator.like(tied_problem, "holdout", chunk_size=chunk_size)
    assert ev.evaluations(configs) == [tied_problem.evaluate_one(c) for c in configs]


def test_refuses_other_score_kinds_and_partial_problems(tied_problem):
    from search import SearchError
    ev = SplitEvaluator.like(tied_problem, "holdout")
    with pytest.raises(SearchError, match="score"):
        ev.evaluate([ExitConfig((0,), (0.5,), "margin")])
    with pytest.raises(ValueError, match="every sample"):
        SplitEvaluator.of_problem(tied_problem.take(np.arange(10)))


@pytest.mark.parametrize("score", ["margin", "neg_entropy"])
def test_other_score_kinds(make_cache, chain, score):
    cache = make_cache(*chain(3), n_samples=400, n_classes=7, k=3, seed=4, logits=True)
    problem = ExitProblem(cache, "holdout", score=score)
    configs = _configs(problem, np.random.default_rng(0), 30)
    assert SplitEvaluator.like(problem, "holdout", chunk_size=97).evaluations(configs) == \
        [problem.evaluate_one(c) for c in configs]
