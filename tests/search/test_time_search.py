"""Searching on predicted time (``--objective time --cost-table NAME``): dp exact at B = 1, the seeded population
engines on the exact objective at B > 1, the refusals, and the export's time record checked and recomputed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from contract.costs import CostModelError, get_cost_model, list_cost_models
from data_cache.cost_tables import TimedItem, TimeTable, profile_grid, write_cost_table
from data_cache.synthetic import make_synthetic_cache
from data_cache.writer import save_cache
from search import ExitProblem, SearchError, create_engine
from search.costs import cost_table
from search.export import build_export
from search.export_schema import export_problems
from search.indicators import hypervolume
from search.pareto import main
from search.time_cost import TimeCostModel
from search.verify import verify_export


def time_table(cache, name: str, batch_size: int, *, fingerprint: str | None = None) -> TimeTable:
    """A synthetic table: every unit a fixed cost plus a sub-linear part in its MACs (compacted batches cost more
    per row), a step per early exit, the final scoring, the collection and the base model."""
    grid = profile_grid(batch_size)

    def t(a: float, b: float) -> tuple[float, ...]:
        return tuple(a + b * n ** 0.7 for n in grid)

    items = [TimedItem(u.name, u.kind, *[t(2e-5, 1e-9 * u.macs)] * 3, units=(u.name,)) for u in cache.units]
    items += [TimedItem(f"step:{e.name}", "step", *[t(1e-5, 1e-6)] * 3, exit=e.name) for e in cache.exits[:-1]]
    items += [TimedItem("finish", "finish", *[t(5e-6, 5e-7)] * 3),
              TimedItem("collect", "collect", *[t(5e-6, 5e-7)] * 3)]
    full = sum(1e-9 * u.macs for u in cache.units if u.name in cache.exits[-1].units)
    items.append(TimedItem("base", "base", *[t(5e-5, full)] * 3))
    target = {"device": "cpu", "device_name": "test", "threads": 1, "batch_size": batch_size, "runtime": "eager"}
    return TimeTable(name, fingerprint or cache.fingerprint, None, target, {"rounds": 1}, grid, tuple(items))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    c = save_cache(tmp_path_factory.mktemp("time") / "cache", make_synthetic_cache(600, 3, n_head_types=2, seed=3))
    write_cost_table(c.path, time_table(c, "b1", 1))
    write_cost_table(c.path, time_table(c, "b64", 64))
    return c


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    c = save_cache(tmp_path_factory.mktemp("tiny") / "cache", make_synthetic_cache(120, 2, seed=5))
    write_cost_table(c.path, time_table(c, "b1", 1))
    return c


def _problem(cache, name: str, rebatch: bool = False) -> ExitProblem:
    return ExitProblem(cache, "search", costs=cost_table(cache, "time", table=name, rebatch=rebatch))


def _estimated(problem: ExitProblem, name: str, configs, rebatch: bool = False) -> np.ndarray:
    """Relative time of ``configs`` straight from ``TimeCostModel.estimate``."""
    model = TimeCostModel.from_cache(problem.cache, name, rebatch=rebatch)
    return np.array([model.estimate(c.exits, problem.assign(c), c.rule_names).relative_time for c in configs])


def test_the_time_model_is_registered_beside_the_others():
    assert {"macs", "latency", "units", "time"} <= set(list_cost_models())
    unbound = get_cost_model("time")
    assert unbound.name == "time" and not unbound.additive
    with pytest.raises(CostModelError, match="--cost-table"):
        unbound.unit_costs([])
    assert get_cost_model("macs") is get_cost_model("macs")     # argument-free models stay shared instances


def test_dp_is_exact_at_batch_1_against_brute_force(tiny):
    problem = _problem(tiny, "b1")
    assert problem.costs.additive
    dp = create_engine("dp").run(problem)
    brute = create_engine("exhaustive", levels=None).run(problem)
    for front in (dp, brute):   # additive at B = 1: the engines' own per-unit sums are the time model
        np.testing.assert_allclose(front.F[:, 1], _estimated(problem, "b1", front.configs), rtol=1e-12)
    assert hypervolume(dp.F) >= 0.997 * hypervolume(brute.F)


def test_rebatched_at_batch_64_dp_is_exact_against_brute_force(tmp_path):
    c = save_cache(tmp_path / "cache", make_synthetic_cache(120, 2, seed=5))
    write_cost_table(c.path, time_table(c, "b64", 64))
    problem = _problem(c, "b64", rebatch=True)
    assert problem.costs.additive   # every segment runs full batches: a sample's cost is its own path's
    dp = create_engine("dp").run(problem)
    brute = create_engine("exhaustive", levels=None).run(problem)
    for front in (dp, brute):
        np.testing.assert_allclose(front.F[:, 1], _estimated(problem, "b64", front.configs, True), rtol=1e-12)
        counts = [problem.exit_outcomes(cf)[0] for cf in front.configs]  # the surrogate is the model itself
        surrogate = [float(n @ problem.costs.exit_costs(cf.exits)) / problem.n_samples / problem.costs.base_cost
                     for n, cf in zip(counts, front.configs, strict=True)]
        np.testing.assert_allclose(front.F[:, 1], surrogate, rtol=1e-9)
    assert hypervolume(dp.F) >= 0.997 * hypervolume(brute.F)
    compacted = _estimated(problem, "b64", dp.configs[1:], False)
    assert (np.asarray(_estimated(problem, "b64", dp.configs[1:], True)) < compacted).all()


def test_at_batch_64_every_front_is_scored_with_the_exact_model(cache):
    problem = _problem(cache, "b64")
    assert not problem.costs.additive
    for name in ("dp", "greedy", "global"):
        front = create_engine(name).run(problem)
        np.testing.assert_allclose(front.F[:, 1], _estimated(problem, "b64", front.configs), rtol=1e-12)
    # the additive surrogate (dp's per-unit sums) is not the time model here: the fast path would be wrong
    front = create_engine("dp").run(problem)
    c = front.configs[len(front) // 2]
    counts, _ = problem.exit_outcomes(c)
    surrogate = float(counts @ problem.costs.exit_costs(c.exits)) / problem.n_samples / problem.costs.base_cost
    assert abs(surrogate - _estimated(problem, "b64", [c])[0]) > 1e-3


@pytest.mark.parametrize("name", ["b1", "b64"])
def test_partner_rules_are_timed_with_their_partners_head(cache, name):
    rules = ("max_prob", "agree", "ensemble")
    problem = ExitProblem(cache, "search", costs=cost_table(cache, "time", table=name), rules=rules)
    front = create_engine("dp").run(problem)
    assert {r for c in front.configs for r in c.rule_names} & {"agree", "ensemble"}
    np.testing.assert_allclose(front.F[:, 1], _estimated(problem, name, front.configs), rtol=1e-12)
    model = TimeCostModel.from_cache(cache, name)
    e = next(i for i in range(len(cache.exits) - 1) if i in model.partners)
    partner = cache.exits[model.partners[e]].name
    leave = np.full(problem.n_samples, len(cache.exits) - 1)
    alone = model.estimate([e], leave, ["max_prob"]).items
    paired = model.estimate([e], leave, ["agree"]).items
    assert partner not in alone and paired[partner] > 0          # the partner's head runs, its step does not
    assert f"step:{partner}" not in paired and set(paired) - set(alone) == {partner}
    both = model.estimate([model.partners[e], e], leave, ["max_prob", "agree"]).items
    assert set(both) == set(model.estimate([model.partners[e], e], leave, ["max_prob", "max_prob"]).items)


@pytest.mark.parametrize("engine, kw", [("nsga2", {"pop_size": 40}), ("optuna", {"pop_size": 40})])
def test_seeded_engines_reach_at_least_dps_rescored_front(cache, engine, kw):
    pytest.importorskip("pymoo" if engine == "nsga2" else "optuna")
    from search import Budget

    problem = _problem(cache, "b64")
    dp = create_engine("dp").run(problem)
    seeded = create_engine(engine, seed_with_dp=True, **kw).run(problem, budget=Budget(max_evals=600), seed=0)
    np.testing.assert_allclose(seeded.F[:, 1], _estimated(problem, "b64", seeded.configs), rtol=1e-12)
    assert hypervolume(seeded.F) >= hypervolume(dp.F) - 1e-12


def _run(capsys, cache, *args) -> tuple[int, str]:
    code = main([str(cache.path), "--methods", "dp", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["--objective", "time"], "--objective time needs --cost-table"),
    (["--objective", "time", "--cost-table", "nope"], "no cost table 'nope'"),
    (["--cost-table", "b64"], "--cost-table serves --objective time only"),
    (["--objective", "time", "--cost-table", "b64", "--batch-size", "128"], "batch size 128 asked"),
    (["--objective", "time", "--cost-table", "b64", "--budget", "0.6"], "cannot be certified"),
    (["--objective", "time", "--cost-table", "other"], "profiled for cache"),
    (["--rebatch"], "--rebatch serves --objective time only"),
])
def test_refusals_are_one_line_exit_2(cache, capsys, args, words):
    if "other" in args:
        write_cost_table(cache.path, time_table(cache, "other", 8, fingerprint="sha256:" + "1" * 64), overwrite=True)
    code, err = _run(capsys, cache, *args)
    assert code == 2 and words in err and err.count("\n") == 1 and err.startswith("error: ")


def test_the_export_records_the_table_and_verifies(cache, tmp_path, capsys):
    out = tmp_path / "front.json"
    code, _ = _run(capsys, cache, "--objective", "time", "--cost-table", "b64", "--export", str(out))
    assert code == 0
    doc = json.loads(out.read_text())
    rec = doc["cost_table"]
    assert doc["objective"] == "time" and rec["name"] == "b64" and rec["batch_size"] == 64
    assert rec["fingerprint"].startswith("sha256:") and rec["runtime"] == "eager" and rec["method"] == "binomial"
    assert (rec["device"], rec["threads"]) == ("cpu", 1)
    model = TimeCostModel.from_cache(cache, "b64")
    assert doc["base"]["search"]["cost"] == pytest.approx(1e3 * model.base_time_per_sample(), rel=1e-12)
    problem = _problem(cache, "b64")
    for entry in doc["configs"][:: max(1, len(doc["configs"]) // 6)]:
        s = entry["search"]
        config = problem.check_config(_config(entry, cache))
        est = model.estimate(config.exits, problem.assign(config))
        assert s["time_per_sample_ms"] == pytest.approx(1e3 * est.time_per_sample_s, rel=1e-12)
        assert s["relative_cost"] == pytest.approx(est.relative_time, rel=1e-12)
        assert s["predicted_speedup"] == pytest.approx(est.speedup, rel=1e-12)
    assert verify_export(doc, cache).n_configs == len(doc["configs"])

    def refused(edit, words):
        bad = json.loads(json.dumps(doc))
        edit(bad)
        with pytest.raises(SearchError, match=words):
            verify_export(bad, cache)

    refused(lambda d: d["configs"][0]["search"].update(time_per_sample_ms=1.0), "time_per_sample_ms")
    refused(lambda d: d["configs"][0]["holdout"].update(predicted_speedup=9.0), "predicted_speedup")
    refused(lambda d: d["cost_table"].update(fingerprint="sha256:" + "2" * 64), "cost_table.fingerprint")
    refused(lambda d: d["cost_table"].update(batch_size=32), "does not reproduce")
    refused(lambda d: d["cost_table"].update(name="nope"), "no cost table 'nope'")


def test_a_rebatched_search_records_it_certifies_a_budget_and_verifies(cache, tmp_path, capsys):
    out = tmp_path / "front.json"
    code = main([str(cache.path), "--methods", "dp", "--objective", "time", "--cost-table", "b64", "--rebatch",
                 "--budget", "0.7", "--export", str(out)])
    assert code == 0 and "at batch size 64, re-batched" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["cost_table"]["rebatch"] is True and doc["cost_table"]["batch_size"] == 64
    model = TimeCostModel.from_cache(cache, "b64", rebatch=True)
    problem = _problem(cache, "b64", rebatch=True)
    entry = doc["configs"][len(doc["configs"]) // 2]
    config = problem.check_config(_config(entry, cache))
    est = model.estimate(config.exits, problem.assign(config))
    assert entry["search"]["time_per_sample_ms"] == pytest.approx(1e3 * est.time_per_sample_s, rel=1e-12)
    assert any("certificate" in c for c in doc["configs"])   # additive: the budget was certified
    assert verify_export(doc, cache).n_configs == len(doc["configs"])
    with pytest.raises(SearchError, match="does not reproduce"):   # recomputed under compaction it differs
        verify_export({**doc, "cost_table": {**doc["cost_table"], "rebatch": False}}, cache)
    bad = {**doc, "cost_table": {**doc["cost_table"], "rebatch": "yes"}}
    assert any("cost_table.rebatch" in p for p in export_problems(bad))


def _config(entry, cache):
    from contract import ExitConfig

    return ExitConfig.from_json(entry["exits"], cache, "max_prob")


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.pop("cost_table"), "cost_table: missing"),
    (lambda d: d["cost_table"].update(threads=1.0), "cost_table.threads"),
    (lambda d: d["cost_table"].update(runtime="tvm"), "cost_table.runtime"),
    (lambda d: d["cost_table"].update(fingerprint="abc"), "cost_table.fingerprint"),
    (lambda d: d["configs"][0]["search"].pop("predicted_speedup"), "predicted_speedup: missing"),
    (lambda d: d["configs"][0]["search"].update(time_per_sample_ms=-1), "time_per_sample_ms"),
    (lambda d: d.update(objective="macs"), "only an export on objective 'time'"),
])
def test_the_schema_checks_the_time_fields(cache, edit, words):
    problem = _problem(cache, "b64")
    front = create_engine("dp", max_configs=4).run(problem)
    doc = build_export([("dp", c) for c in front.configs], search=problem, holdout=problem.on_split("holdout"))
    assert export_problems(doc) == []
    edit(doc)
    assert any(words in p for p in export_problems(doc))


def test_the_exact_models_cache_does_not_keep_a_time_matrix_per_set_of_exits(tmp_path):
    """Each item's times on 0..B rows are the same whatever the enabled exits: held once, not once per set of enabled
    exits (at B = 1024 a population engine's few thousand distinct sets held gigabytes)."""
    import itertools
    import tracemalloc

    c = save_cache(tmp_path / "cache", make_synthetic_cache(200, 4, n_head_types=2, seed=1))
    write_cost_table(c.path, time_table(c, "b1024", 1024))
    costs = cost_table(c, "time", table="b1024")
    early = range(len(c.exits) - 1)
    sets = [s for r in range(len(early) + 1) for s in itertools.combinations(early, r)]
    assert len(sets) == 256
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for s in sets:
            costs.mean_cost_of(s, np.ones(len(s) + 1))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_set_matrix = 8 * 1025 * len(c.units)   # bytes of one set's (items x B + 1) matrix, its units alone
    assert held < 16 * per_set_matrix, held
