"""cost_table: each compute unit counted once over the enabled exits up to the one a sample leaves at."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from data_cache import CacheFormatError
from data_cache._base import ExitInfo, UnitInfo
from search import ExitConfig, ExitProblem, SearchError
from search.costs import cost_table


def naive_exit_costs(cache, enabled) -> list[float]:
    macs = {u.name: u.macs for u in cache.units}
    path, used, out = list(enabled) + [len(cache.exits) - 1], set(), []
    for e in path:
        used |= set(cache.exits[e].units)
        out.append(sum(macs[u] for u in used))
    return out


def test_union_semantics_on_every_enabled_subset(saver_cache):
    costs = cost_table(saver_cache)
    n_early = len(saver_cache.exits) - 1
    for r in range(n_early + 1):
        for enabled in itertools.combinations(range(n_early), r):
            np.testing.assert_allclose(costs.exit_costs(enabled), naive_exit_costs(saver_cache, enabled), rtol=1e-12)


def test_saver_runs_alone_then_the_base_from_scratch(saver_cache):
    costs = cost_table(saver_cache)
    macs = {u.name: u.macs for u in saver_cache.units}
    assert saver_cache.exits[0].units == ("saver",)
    assert costs.standalone_cost(0) == pytest.approx(macs["saver"])
    c_saver, c_final = costs.exit_costs([0])
    assert c_saver == pytest.approx(macs["saver"])
    assert c_final == pytest.approx(macs["saver"] + costs.base_cost)
    assert costs.base_cost == pytest.approx(sum(macs[u] for u in saver_cache.exits[-1].units))


def test_a_unit_shared_by_two_exits_is_paid_once(make_cache):
    units = [UnitInfo("seg0", "segment", 10.0), UnitInfo("seg1", "segment", 20.0), UnitInfo("seg2", "segment", 30.0),
             UnitInfo("shared", "head", 5.0), UnitInfo("own", "head", 1.0)]
    exits = [ExitInfo("a", 0, "tok", ("seg0", "shared")),
             ExitInfo("b", 1, "tok", ("seg0", "seg1", "shared", "own")),
             ExitInfo("head", 2, "final", ("seg0", "seg1", "seg2"), final=True)]
    cache = make_cache(exits, units, n_samples=40)
    costs = cost_table(cache)
    assert costs.base_cost == 60.0
    np.testing.assert_allclose(costs.exit_costs([0, 1]), [15.0, 36.0, 66.0])
    np.testing.assert_allclose(costs.exit_costs([1]), [36.0, 66.0])
    np.testing.assert_allclose(costs.exit_costs([0]), [15.0, 65.0])
    np.testing.assert_allclose(costs.exit_costs([]), [60.0])
    # the evaluator pays it once too: everyone leaves at b after passing a
    problem = ExitProblem(cache)
    ev = problem.evaluate_one(ExitConfig((0, 1), (1.0, 0.0)))
    assert ev.exit_fractions == (0.0, 1.0, 0.0) and ev.cost == pytest.approx(36.0)


def test_latency_objective(make_cache, chain):
    exits, units = chain(2)
    timed = [UnitInfo(u.name, u.kind, u.macs, latency_s=u.macs * 1e-3) for u in units]
    costs = cost_table(make_cache(exits, timed), "latency")
    assert costs.objective == "latency" and costs.base_cost == pytest.approx(0.06)
    with pytest.raises(SearchError, match="needs measured latency"):
        cost_table(make_cache(exits, units), "latency")


def test_bad_objectives_and_costs(make_cache, chain):
    exits, units = chain(1)
    with pytest.raises(SearchError, match="unknown objective 'flops'"):
        cost_table(make_cache(exits, units), "flops")
    free = [UnitInfo(u.name, u.kind, 0.0) for u in units]
    with pytest.raises(CacheFormatError, match=r"the final exit costs 0 MACs \(the base cost\); it must be positive"):
        make_cache(exits, free)


@pytest.mark.parametrize("macs, match", [(0.0, "the final exit costs 0 MACs"), (1e308, "overflows")])
def test_cost_model_makes_the_caches_own_check(make_cache, chain, macs, match):
    """A reader whose meta was never checked still meets the one shared cost check."""
    exits, units = chain(1)
    cache = make_cache(exits, units)
    bad = [UnitInfo(u.name, u.kind, macs) for u in units]
    reader = SimpleNamespace(units=tuple(bad), exits=cache.exits, splits=cache.splits, n_samples=cache.n_samples)
    with pytest.raises(SearchError, match=match):
        cost_table(reader)
