"""data_cache.synthetic: seeded, structurally realistic caches."""
from __future__ import annotations

import numpy as np
import pytest

from data_cache import save_cache, validate_cache
from data_cache.synthetic import as_generator, make_synthetic_cache, write_synthetic_cache


def test_seeded_and_reproducible():
    a = make_synthetic_cache(200, 3, n_head_types=2, seed=5)
    b = make_synthetic_cache(200, 3, n_head_types=2, seed=5)
    c = make_synthetic_cache(200, 3, n_head_types=2, seed=6)
    assert a.fingerprint == b.fingerprint != c.fingerprint


@pytest.mark.parametrize("saver", [False, True])
def test_structure(saver):
    cache = make_synthetic_cache(300, 4, n_head_types=3, n_classes=20, k=4, saver=saver, seed=0)
    assert cache.meta.n_exits == 4 * 3 + 1 + saver
    assert cache.n_samples("search") == cache.n_samples("holdout") == 150
    assert [e.final for e in cache.exits].count(True) == 1 and cache.exits[-1].final
    positions = [e.position for e in cache.exits]
    assert positions == sorted(positions)
    kinds = {u.name: u.kind for u in cache.units}
    assert ("saver" in kinds.values()) == saver
    if saver:
        assert cache.exits[0].units == ("saver",)
    assert set(cache.exits[-1].units) == {n for n, k in kinds.items() if k == "segment"}
    np.testing.assert_array_equal(np.sort(np.concatenate([cache.sample_index(s) for s in cache.splits()])),
                                  np.arange(300))


def test_values_are_valid_and_deeper_is_better(tmp_path):
    cache = make_synthetic_cache(4000, 4, seed=3)
    save_cache(tmp_path / "c", cache)
    assert validate_cache(tmp_path / "c") == []
    acc = (cache.topk_ids("search")[:, 0] == cache.labels("search")).mean(axis=1)
    assert acc[-1] > acc[0] + 0.1
    conf = cache.topk_probs("search")[:, 0]
    right = cache.topk_ids("search")[:, 0] == cache.labels("search")
    assert conf[right].mean() > conf[~right].mean()  # confidence tracks correctness


def test_write_synthetic_cache_streams_a_valid_cache(tmp_path):
    cache = write_synthetic_cache(tmp_path / "c", 500, 2, n_head_types=2, saver=True, with_latency=True, chunk=64)
    assert validate_cache(tmp_path / "c") == []
    assert all(u.latency_s is not None and u.latency_s > 0 for u in cache.units)
    again = write_synthetic_cache(tmp_path / "d", 500, 2, n_head_types=2, saver=True, with_latency=True, chunk=64)
    assert again.fingerprint == cache.fingerprint


def test_as_generator():
    g = np.random.default_rng(1)
    assert as_generator(g) is g
    assert as_generator(3).integers(1000) == np.random.default_rng(3).integers(1000)
    assert isinstance(as_generator(None), np.random.Generator)
    with pytest.raises(ValueError, match="got 'abc'"):
        as_generator("abc")


@pytest.mark.parametrize("kw", [dict(n_classes=1), dict(k=11), dict(n_head_types=0)])
def test_invalid_spec(kw):
    with pytest.raises(ValueError, match="invalid synthetic spec"):
        make_synthetic_cache(10, 2, **kw)


def test_empty_split_refused():
    with pytest.raises(ValueError, match="leaves a split empty"):
        make_synthetic_cache(1, 2)
