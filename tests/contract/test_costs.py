"""contract.costs: the registry, today's macs and latency numbers, the extra ``units`` model, and a model that
is not additive seeing every sample's exit."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from contract.costs import (
    CostModel,
    CostModelError,
    CostTable,
    _base,
    get_cost_model,
    list_cost_models,
    register_cost_model,
)
from data_cache import open_cache, save_cache
from data_cache.bundled import bundled_cache_path
from data_cache.synthetic import make_synthetic_cache
from search import ExitConfig, ExitProblem


@pytest.fixture(scope="module")
def bundled():
    return open_cache(bundled_cache_path())


@pytest.fixture(scope="module")
def timed():
    """A synthetic cache with a saver, two head types and measured latency."""
    return make_synthetic_cache(400, 4, n_head_types=2, saver=True, with_latency=True, seed=3)


def naive_exit_costs(cache, enabled, cost) -> list[float]:
    """Each unit once over the enabled exits up to the one left at (the definition, written out)."""
    per_unit = {u.name: cost(u) for u in cache.units}
    used, out = set(), []
    for e in [*enabled, len(cache.exits) - 1]:
        used |= set(cache.exits[e].units)
        out.append(sum(per_unit[u] for u in used))
    return out


def table(cache, name: str) -> CostTable:
    return get_cost_model(name).table(cache.units, cache.exits)


def test_registry_lists_the_models_default_first_and_refuses_unknown_names():
    assert list_cost_models()[:3] == ["macs", "latency", "units"]
    assert get_cost_model("macs").name == "macs" and get_cost_model(get_cost_model("units")).name == "units"
    for bad in ("flops", "", None, 3):
        with pytest.raises(CostModelError) as info:
            get_cost_model(bad)
        assert str(info.value) == (f"unknown objective {bad!r}: this version knows the cost models "
                                   f"{list_cost_models()}")


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(CostModelError, match="'macs' is empty or already registered"):
        @register_cost_model
        class Again(CostModel):
            name = "macs"

            def unit_costs(self, units):
                return np.zeros(len(units))


def test_macs_keeps_todays_numbers_on_the_bundled_cache(bundled):
    t = table(bundled, "macs")
    assert (t.objective, t.base_cost, t.standalone_cost(3)) == ("macs", 15354496.0, 3895040.0)
    assert t.exit_costs([0, 5, 9]).tolist() == [1963776.0, 5808640.0, 9653504.0, 15393024.0]
    def cost(u):
        return u.macs
    for enabled in ([], [0], [1, 3], [0, 4, 8, 15]):
        np.testing.assert_allclose(t.exit_costs(enabled), naive_exit_costs(bundled, enabled, cost), rtol=1e-12)


@pytest.mark.parametrize("name, field, base, path", [
    ("macs", "macs", 4000000000.0000005, [320000000.0, 1195060713.300743, 3083959699.2487288, 4363083530.187506]),
    ("latency", "latency_s", 0.013500900090185444,
     [0.0008114633899047466, 0.0039440225828994875, 0.010497680109458372, 0.014427361234321395])])
def test_macs_and_latency_keep_todays_numbers_on_a_synthetic_cache(timed, name, field, base, path):
    t = table(timed, name)
    # to the last bit but one: numpy 1.x and 2.x may round a sum differently (make test-min runs numpy 1.24)
    assert t.base_cost == pytest.approx(base, rel=1e-15)
    assert t.exit_costs([0, 2, 5]).tolist() == pytest.approx(path, rel=1e-15)
    n_early = len(timed.exits) - 1
    for enabled in itertools.combinations(range(n_early), 2):
        np.testing.assert_allclose(t.exit_costs(enabled),
                                   naive_exit_costs(timed, enabled, lambda u: getattr(u, field)), rtol=1e-12)


def test_latency_refuses_a_cache_without_latency_in_one_line(bundled):
    with pytest.raises(CostModelError, match=r"^objective 'latency' needs measured latency for every unit; "
                                             r"this cache has none for \['segment:blocks.0', .*\.\.\.; dump with"):
        table(bundled, "latency")


def test_units_counts_every_unit_once(timed):
    t = table(timed, "units")
    assert t.base_cost == len(timed.exits[-1].units)
    assert t.exit_costs([0, 2]).tolist() == naive_exit_costs(timed, [0, 2], lambda u: 1.0)


@pytest.mark.parametrize("name", ["macs", "latency", "units"])
def test_mean_and_relative_cost_agree_with_the_problem(timed, name):
    problem = ExitProblem(timed, "search", objective=name)
    model, t = get_cost_model(name), problem.costs
    for exits, thresholds in (((0, 2), (0.6, 0.5)), ((1, 3, 5), (0.9, 0.7, 0.4)), ((), ())):
        config = ExitConfig(exits, thresholds)
        ev = problem.evaluate_one(config)
        where = problem.assign(config)
        assert model.mean_cost(t, exits, where) == pytest.approx(ev.cost, rel=1e-12)
        assert model.relative_cost(t, exits, ev.exit_fractions) == pytest.approx(ev.relative_cost, rel=1e-12)


class BatchLaunches(CostModel):
    """Not additive: a batch of ``B`` rows pays a unit once when any of its rows reaches it."""

    name = "test_batch_launches"
    quantity = "launches"
    additive = False
    batch = 4

    def unit_costs(self, units):
        return np.ones(len(units))

    def mean_cost(self, table, enabled, where):
        path = [*enabled, table.final_exit]
        used = np.logical_or.accumulate(table.needs[path], axis=0)       # units of leaving at each path step
        step = np.searchsorted(path, where)                                # enabled exits run in index order
        total = sum(float(np.logical_or.reduce(used[step[i:i + self.batch]], axis=0) @ table.unit_costs)
                    for i in range(0, len(where), self.batch))
        return total / len(where)


def test_a_model_that_is_not_additive_sees_every_samples_exit(timed, monkeypatch):
    monkeypatch.setattr(_base, "_REGISTRY", dict(_base._REGISTRY))
    register_cost_model(BatchLaunches)
    model = get_cost_model("test_batch_launches")
    t = model.table(timed.units, timed.exits)
    enabled, final = [0, 3], t.final_exit
    mixed = np.array([0, final, 3, 0] * 2)
    grouped = np.sort(mixed)                          # same fractions, batches of like rows
    assert model.mean_cost(t, enabled, mixed) > model.mean_cost(t, enabled, grouped)
    with pytest.raises(CostModelError, match="not additive: its cost needs every sample's exit"):
        model.relative_cost(t, enabled, [0.5, 0.25, 0.25])
    assert "test_batch_launches" in list_cost_models()


def test_search_exports_the_objective_it_searched(tmp_path):
    from search.pareto import main

    save_cache(tmp_path / "cache", make_synthetic_cache(600, 3, seed=5))
    out = tmp_path / "front.json"
    assert main([str(tmp_path / "cache"), "--methods", "global", "--objective", "units", "--no-progress",
                 "--export", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["objective"] == "units" and doc["base"]["search"]["cost"] == 4.0


def test_a_problem_built_on_a_table_takes_the_tables_objective(timed):
    """What an export records is the cost model its numbers are in, even when the table was passed in."""
    problem = ExitProblem(timed, "search", costs=table(timed, "latency"))
    assert problem.objective == "latency" and problem.on_split("holdout").objective == "latency"
