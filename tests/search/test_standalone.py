"""Standalone table and oracle bound."""
from __future__ import annotations

import numpy as np
import pytest

from data_cache import format as fmt
from data_cache.memory import InMemoryCache
from search import ExitProblem
from search.standalone import oracle_bound, standalone_table


def test_table_rows(small_problem):
    rows = standalone_table(small_problem)
    cache = small_problem.cache
    assert [r["name"] for r in rows] == [e.name for e in cache.exits]
    assert rows[-1]["relative_cost"] == pytest.approx(1.0)
    assert rows[-1]["accuracy"] == pytest.approx(small_problem.base.accuracy)
    for e, r in enumerate(rows):
        assert r["position"] == cache.exits[e].position and r["head"] == cache.exits[e].head
        assert r["accuracy"] == pytest.approx(small_problem.correct[e].mean())
        assert 0.0 < r["relative_cost"] <= 1.0 + 1e-12


def test_oracle_is_a_ceiling(small_problem):
    acc, cost = oracle_bound(small_problem)
    assert acc == pytest.approx(small_problem.correct.any(axis=0).mean())
    assert acc >= max(r["accuracy"] for r in standalone_table(small_problem))
    assert 0.0 < cost < 1.0


def test_oracle_by_hand(make_cache, chain):
    """3 samples, exits costing 11, 31 (standalone) and 60: right at {1, final}, {final}, nowhere."""
    exits, units = chain(2)
    cache = make_cache(exits, units, n_samples=3, n_classes=3, k=1)
    arrays = {}
    for s in cache.splits():
        labels = np.array([0, 1, 2])
        ids = np.array([[[1, 0, 0]], [[0, 0, 0]], [[0, 1, 0]]], dtype=np.int32)   # (n_exits, k, n)
        arrays[s] = {fmt.LABELS: labels, fmt.SAMPLE_INDEX: cache.sample_index(s), fmt.TOPK_IDS: ids,
                     fmt.TOPK_PROBS: np.full((3, 1, 3), 0.5, dtype=np.float32)}
    problem = ExitProblem(InMemoryCache(cache.meta, arrays))
    # exit 0 right on nothing; exit 1 right on sample 0; final right on samples 0 and 1
    acc, cost = oracle_bound(problem)
    assert acc == pytest.approx(2 / 3)
    assert cost == pytest.approx((31.0 + 60.0 + 60.0) / 3 / 60.0)
