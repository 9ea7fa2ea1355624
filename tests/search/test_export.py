"""exitconfig/1 export: an exported file evaluated independently gives the numbers it states."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data_cache import save_cache
from data_cache.synthetic import make_synthetic_cache
from search import ExitProblem, SearchError, run_search
from search.export import (
    build_export,
    check_export_cache,
    export_configs,
    read_export,
    write_export,
)


def _naive(cache, split, config):
    """Per-sample reference evaluation straight from the cache arrays (no ExitProblem)."""
    probs, ids, labels = (np.asarray(cache.topk_probs(split)), np.asarray(cache.topk_ids(split)),
                          np.asarray(cache.labels(split)))
    units = {u.name: u.macs for u in cache.units}
    final = len(cache.exits) - 1
    path = list(config.exits) + [final]
    right, cost, counts = 0, 0.0, np.zeros(len(path))
    for i in range(labels.size):
        for j, e in enumerate(path):
            if e == final or probs[e, 0, i] > config.thresholds[j]:
                break
        used = set().union(*(cache.exits[x].units for x in path[:j + 1]))
        cost += sum(units[u] for u in used)
        right += ids[e, 0, i] == labels[i]
        counts[j] += 1
    base = sum(units[u] for u in cache.exits[final].units)
    return right / labels.size, cost / labels.size / base, counts / labels.size


def test_exported_numbers_match_an_independent_evaluation(tmp_path):
    cache = save_cache(tmp_path / "c", make_synthetic_cache(600, 3, n_head_types=2, saver=True, seed=3))
    search = ExitProblem(cache)
    holdout = search.on_split("holdout")
    front = run_search(search, "dp")
    doc = build_export([("dp", c) for c in front.configs], search=search, holdout=holdout)
    write_export(tmp_path / "front.json", doc)
    back = read_export(tmp_path / "front.json")
    assert back["format"] == "exitconfig/1" and back["cache"]["fingerprint"] == cache.fingerprint
    costs = [d["search"]["relative_cost"] for d in back["configs"]]
    assert costs == sorted(costs)
    for (cid, config), entry in list(zip(export_configs(back, cache), back["configs"], strict=True))[::7]:
        assert cid == entry["id"] and entry["method"] == "dp"
        for split in ("search", "holdout"):
            acc, rel, fractions = _naive(cache, split, config)
            assert entry[split]["accuracy"] == pytest.approx(acc, abs=1e-12)
            assert entry[split]["relative_cost"] == pytest.approx(rel, rel=1e-12)
            np.testing.assert_allclose(entry[split]["exit_fractions"], fractions, atol=1e-12)
    assert back["base"]["holdout"]["accuracy"] == pytest.approx(holdout.base.accuracy)
    json.dumps(back)  # plain JSON numbers only


def test_export_refuses_other_caches_and_bad_files(tmp_path):
    a = make_synthetic_cache(200, 2, seed=1)
    b = make_synthetic_cache(200, 2, seed=2)
    search = ExitProblem(a)
    doc = build_export([("dp", c) for c in run_search(search, "dp").configs], search=search,
                       holdout=search.on_split("holdout"))
    with pytest.raises(SearchError, match="searched on cache"):
        check_export_cache(doc, b)
    (tmp_path / "bad.json").write_text('{"format": "exitconfig/9", "configs": []}')
    with pytest.raises(SearchError, match="exitconfig/9"):
        read_export(tmp_path / "bad.json")
    with pytest.raises(SearchError, match="no such"):
        read_export(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SearchError, match="not valid JSON"):
        read_export(tmp_path / "broken.json")
