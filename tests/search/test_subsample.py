"""Fitting on a seeded subsample of a large split: the plan, the problem it gives, the memory check."""
from __future__ import annotations

import numpy as np
import pytest

from data_cache.synthetic import make_synthetic_cache
from search import ExitProblem, SearchError, create_engine
from search.exact import SplitEvaluator
from search.indicators import HV
from search.subsample import FitSample, check_fit_memory, fit_problem, plan_fit


@pytest.fixture(scope="module")
def cache():
    return make_synthetic_cache(8000, 4, n_head_types=2, seed=9)


def test_plan(cache):
    assert plan_fit(cache, subsample=1000, above=4000) is None              # 4000 search samples: all
    assert plan_fit(cache, subsample=4000, above=100) is None               # subsample not smaller
    assert plan_fit(cache, subsample=1000, above=3999, seed=3) == FitSample(1000, 4000, 3)
    with pytest.raises(SearchError, match="below the number of exit positions"):
        plan_fit(cache, subsample=3, above=100)


def test_indices_are_seeded_sorted_and_distinct():
    a, b, c = (FitSample(500, 10_000, seed).indices() for seed in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.size == 500 and np.all(np.diff(a) > 0) and 0 <= a[0] and a[-1] < 10_000
    assert FitSample(500, 10_000, 1).to_json() == {"subsample": 500, "of": 10_000, "seed": 1}


def test_fit_problem_holds_the_subsample(cache):
    full = ExitProblem(cache)
    sample = FitSample(1000, 4000, 0)
    fit = fit_problem(cache, "search", sample, chunk_size=333)
    idx = sample.indices()
    assert np.array_equal(fit.samples, idx) and fit.n_samples == 1000 and fit.split_size == 4000
    assert np.array_equal(fit.scores, full.scores[:, idx]) and np.array_equal(fit.correct, full.correct[:, idx])
    # a front fitted on it, scored exactly on every sample, keeps most of the full fit's hypervolume
    front = create_engine("dp").run(fit)
    F = SplitEvaluator.like(fit, "search").evaluate(front.configs)
    np.testing.assert_array_equal(F, full.evaluate(front.configs))
    assert HV()(F) >= 0.98 * HV()(create_engine("dp").run(full).F)


def test_memory_check_names_the_method():
    check_fit_memory(65_536, 251, ["dp", "greedy"], 4e9)
    with pytest.raises(SearchError, match=r"method 'dp' on 1,280,000 samples x 251 exits needs about"):
        check_fit_memory(1_280_000, 251, ["global", "dp"], 4e9)
