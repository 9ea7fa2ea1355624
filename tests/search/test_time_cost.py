"""The time cost model (``search/time_cost.py``) against brute-force enumeration of every batch on small cases."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from data_cache.cost_tables import TimedItem, TimeTable, interpolate
from search import SearchError
from search.time_cost import TimeCostModel, binomial_pmf, hypergeometric_pmf

GRID = (1, 2, 4)
# Three positions: exit 0 (segment s0 + head h0), exit 1 (s0, s1 + head h1), final (s0, s1, s2).
EXIT_UNITS = [("s0", "h0"), ("s0", "s1", "h1"), ("s0", "s1", "s2")]
EXIT_NAMES = ["e0", "e1", "final"]
# Per sample (cache row): the exit it leaves at under the configuration enabling exits 0 and 1.
LEAVE = np.array([0, 1, 2, 0, 2, 2, 1])


def _times(a: float, b: float) -> tuple[float, ...]:
    """A concave time curve: a fixed cost plus a sub-linear part (small batches cost more per row)."""
    return tuple(a + b * n ** 0.6 for n in GRID)


def _table(items: list[TimedItem] | None = None) -> TimeTable:
    t = {"s0": _times(3.0, 1.0), "s1": _times(2.0, 2.0), "s2": _times(1.0, 4.0), "h0": _times(0.5, 0.1),
         "h1": _times(0.4, 0.2)}
    if items is None:
        items = [TimedItem(u, "head" if u[0] == "h" else "segment", v, v, v, units=(u,)) for u, v in t.items()]
        items += [TimedItem("step:e0", "step", _times(0.3, 0.05), *([_times(0.3, 0.05)] * 2), exit="e0"),
                  TimedItem("step:e1", "step", _times(0.2, 0.07), *([_times(0.2, 0.07)] * 2), exit="e1"),
                  TimedItem("finish", "finish", _times(0.1, 0.01), *([_times(0.1, 0.01)] * 2)),
                  TimedItem("collect", "collect", _times(0.6, 0.02), *([_times(0.6, 0.02)] * 2))]
    items.append(TimedItem("base", "base", _times(6.0, 7.0), _times(6.0, 7.0), _times(6.0, 7.0)))
    target = {"batch_size": GRID[-1], "runtime": "eager"}
    return TimeTable("t", "sha256:" + "0" * 64, None, target, {}, GRID, tuple(items))


def _runs(exit_: int) -> list[str]:
    """Written out by hand: what a sample leaving at ``exit_`` runs (enabled exits 0 and 1)."""
    return {0: ["s0", "h0", "step:e0"],
            1: ["s0", "h0", "step:e0", "s1", "h1", "step:e1"],
            2: ["s0", "h0", "step:e0", "s1", "h1", "step:e1", "s2", "finish"]}[exit_]


def _batch_time(table: TimeTable, rows) -> float:
    """Seconds per sample of one batch of cache rows, every item run on the rows that reach it."""
    B = len(rows)
    counts: dict[str, int] = {}
    for r in rows:
        for item in _runs(int(LEAVE[r])):
            counts[item] = counts.get(item, 0) + 1
    total = sum(float(interpolate(table.grid, table.item(i).median_s, [n])[0]) for i, n in counts.items())
    return (total + float(interpolate(table.grid, table.item("collect").median_s, [B])[0])) / B


def _model(B: int, method: str = "binomial", **kw) -> TimeCostModel:
    return TimeCostModel(_table(), EXIT_UNITS, EXIT_NAMES, batch_size=B, method=method, **kw)


@pytest.mark.parametrize("B", [1, 2, 3, 4])
def test_binomial_equals_every_batch_drawn_with_replacement(B):
    n = len(LEAVE)
    brute = np.mean([_batch_time(_table(), rows) for rows in itertools.product(range(n), repeat=B)])
    assert _model(B).time_per_sample([0, 1], LEAVE) == pytest.approx(brute, rel=1e-12)


@pytest.mark.parametrize("B", [1, 2, 3, 4])
def test_hypergeometric_equals_every_batch_drawn_without_replacement(B):
    n = len(LEAVE)
    brute = np.mean([_batch_time(_table(), rows) for rows in itertools.combinations(range(n), B)])
    assert _model(B, "hypergeometric").time_per_sample([0, 1], LEAVE) == pytest.approx(brute, rel=1e-12)


def test_with_and_without_replacement_differ_on_a_tiny_population_only():
    # 7 samples, batches of 4: the two laws differ; the binomial is the large-population limit of the other.
    with_, without = (_model(4, m).time_per_sample([0, 1], LEAVE) for m in ("binomial", "hypergeometric"))
    assert with_ != pytest.approx(without, rel=1e-6)
    big = np.repeat(LEAVE, 2000)
    with_, without = (_model(4, m).time_per_sample([0, 1], big) for m in ("binomial", "hypergeometric"))
    assert with_ == pytest.approx(without, rel=1e-4)


def test_replay_estimates_the_without_replacement_answer():
    exact = _model(3, "hypergeometric").time_per_sample([0, 1], LEAVE)
    replay = _model(3, "replay", rounds=4000, seed=0).time_per_sample([0, 1], LEAVE)
    assert replay == pytest.approx(exact, rel=0.02)
    assert replay == _model(3, "replay", rounds=4000, seed=0).time_per_sample([0, 1], LEAVE)


def test_batch_one_is_additive():
    table = _table()
    shares = {item: np.mean([item in _runs(int(e)) for e in LEAVE]) for e in [0] for item in
              ("s0", "s1", "s2", "h0", "h1", "step:e0", "step:e1", "finish")}
    want = sum(p * table.item(i).median_s[0] for i, p in shares.items()) + table.item("collect").median_s[0]
    est = _model(1).estimate([0, 1], LEAVE)
    assert est.time_per_sample_s == pytest.approx(want, rel=1e-12)
    assert est.base_time_per_sample_s == table.item("base").median_s[0]
    assert est.speedup == pytest.approx(est.base_time_per_sample_s / want)


def test_compaction_costs_more_than_the_reach_share_of_a_full_batch_when_times_are_concave():
    # T(n) >= (n / B) T(B) for a concave T through 0, so E[T(N)] >= p T(B): small compacted batches cost
    # more per row than the full batch; a MAC-like (proportional) prediction is optimistic.
    table = _table()
    est = _model(4).estimate([0, 1], LEAVE)
    for item, t in est.items.items():
        if item == "collect":
            continue
        share = np.mean([item in _runs(int(e)) for e in LEAVE])
        full = share * table.item(item).median_s[-1] / 4
        assert t > full if share < 1 else t == pytest.approx(full)


def test_the_base_configuration_runs_every_segment_on_the_whole_batch():
    leave = np.full(5, 2)
    est = _model(4).estimate([], leave)
    table = _table()
    want = sum(table.item(u).median_s[-1] for u in ("s0", "s1", "s2", "finish", "collect")) / 4
    assert est.time_per_sample_s == pytest.approx(want)
    assert set(est.items) == {"s0", "s1", "s2", "finish", "collect"}


def test_pmfs_sum_to_one_and_have_the_right_mean():
    p = binomial_pmf(10, 0.3)
    assert p.sum() == pytest.approx(1.0) and p @ np.arange(11) == pytest.approx(3.0)
    assert binomial_pmf(4, 0.0).tolist() == [1, 0, 0, 0, 0] and binomial_pmf(4, 1.0).tolist() == [0, 0, 0, 0, 1]
    h = hypergeometric_pmf(4, 10, 3)
    assert h.sum() == pytest.approx(1.0) and h @ np.arange(5) == pytest.approx(4 * 3 / 10)
    assert h[0] == pytest.approx(math.comb(7, 4) / math.comb(10, 4))


def test_refusals():
    with pytest.raises(SearchError, match="unknown time expectation method 'exact'"):
        _model(2, "exact")
    with pytest.raises(SearchError, match=r"batch size 8 outside the cost table's grid \(1 to 4\)"):
        _model(8)
    with pytest.raises(SearchError, match="every sample must leave at an enabled exit or the final one"):
        _model(2).time_per_sample([0], LEAVE)
    with pytest.raises(SearchError, match="draws batches of 4 from the cache's 3 samples"):
        _model(4, "hypergeometric").time_per_sample([0, 1], LEAVE[:3])
    table = _table()
    no_step = TimeTable("t", table.cache_fingerprint, None, table.target, {}, GRID,
                        tuple(i for i in table.items if i.name != "step:e1"))
    with pytest.raises(SearchError, match="no step time for exit 'e1'"):
        TimeCostModel(no_step, EXIT_UNITS, EXIT_NAMES).time_per_sample([0, 1], LEAVE)
    no_s2 = TimeTable("t", table.cache_fingerprint, None, table.target, {}, GRID,
                      tuple(i for i in table.items if i.name != "s2"))
    with pytest.raises(SearchError, match="no time for unit 's2'"):
        TimeCostModel(no_s2, EXIT_UNITS, EXIT_NAMES).time_per_sample([0, 1], LEAVE)


def test_a_graph_spanning_an_enabled_exit_is_refused_and_fine_otherwise():
    t = _times(1.0, 1.0)
    graphs = [TimedItem("g0", "graph", t, t, t, units=("s0", "s1")), TimedItem("g1", "graph", t, t, t, units=("s2",)),
              TimedItem("head:e1", "graph", t, t, t, units=("h1",)),
              TimedItem("step:e0", "step", t, t, t, exit="e0"), TimedItem("step:e1", "step", t, t, t, exit="e1")]
    model = TimeCostModel(_table(graphs), EXIT_UNITS, EXIT_NAMES, batch_size=2)
    with pytest.raises(SearchError, match="item 'g0' runs units of which this configuration's samples reach only some"):
        model.time_per_sample([0, 1], LEAVE)
    leave = np.where(LEAVE == 0, 1, LEAVE)  # a bundle cut at exit 1 only: g0 runs s0 and s1 together
    est = model.estimate([1], leave)
    assert set(est.items) == {"g0", "g1", "head:e1", "step:e1"}


def test_the_time_model_and_the_table_reader_load_no_torch():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = "import sys, json, search.time_cost, data_cache.cost_tables; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    loaded = {m.split(".")[0] for m in json.loads(proc.stdout)}
    assert "numpy" in loaded and not loaded & {"torch", "timm", "onnxruntime", "exits"}


# Written out by hand: what a sample leaving at each exit runs when exit 1 decides with a rule reading its partner
# (exit 0: the same head type one position earlier), per configuration (enabled exits, rules).
PARTNER_RUNS = {
    ((1,), ("agree",)): {1: ["s0", "s1", "h1", "h0", "step:e1"],             # h0 runs for exit 1's rule, no step
                         2: ["s0", "s1", "h1", "h0", "step:e1", "s2", "finish"]},
    ((1,), ("max_prob",)): {1: ["s0", "s1", "h1", "step:e1"],
                            2: ["s0", "s1", "h1", "step:e1", "s2", "finish"]},
    ((0, 1), ("max_prob", "ensemble")): {0: ["s0", "h0", "step:e0"],          # h0 already ran: paid once
                                         1: ["s0", "h0", "step:e0", "s1", "h1", "step:e1"],
                                         2: ["s0", "h0", "step:e0", "s1", "h1", "step:e1", "s2", "finish"]},
}


@pytest.mark.parametrize("B", [1, 2, 3])
@pytest.mark.parametrize("config", list(PARTNER_RUNS))
def test_partner_rules_against_every_batch_drawn_with_replacement(B, config):
    enabled, rules = config
    runs = PARTNER_RUNS[config]
    leave = LEAVE if 0 in enabled else np.where(LEAVE == 0, 1, LEAVE)
    table = _table()

    def batch_time(rows) -> float:
        counts: dict[str, int] = {}
        for r in rows:
            for item in runs[int(leave[r])]:
                counts[item] = counts.get(item, 0) + 1
        total = sum(float(interpolate(table.grid, table.item(i).median_s, [n])[0]) for i, n in counts.items())
        return (total + float(interpolate(table.grid, table.item("collect").median_s, [len(rows)])[0])) / len(rows)

    brute = np.mean([batch_time(rows) for rows in itertools.product(range(len(leave)), repeat=B)])
    model = TimeCostModel(table, EXIT_UNITS, EXIT_NAMES, batch_size=B, partners={1: 0})
    est = model.estimate(list(enabled), leave, list(rules))
    assert est.time_per_sample_s == pytest.approx(brute, rel=1e-12)
    assert set(est.items) == {i for items in runs.values() for i in items} | {"collect"}


# What each stage of the configuration enabling exits 0 and 1 runs (``_runs``, cut at the exits).
STAGE_ITEMS = [["s0", "h0", "step:e0"], ["s1", "h1", "step:e1"], ["s2", "finish"]]


class _TimedStages:
    """A ``contract.schedule.Backend`` whose states are cache rows: a row leaves at the exit ``LEAVE`` gives it,
    and every stage run adds its items' table time on the rows it ran on."""

    def __init__(self, table: TimeTable):
        self.table, self.seconds, self.batches = table, 0.0, []

    def advance(self, stage, state, partner):
        self.batches.append(len(state))
        self.seconds += sum(float(interpolate(self.table.grid, self.table.item(i).median_s, [len(state)])[0])
                            for i in STAGE_ITEMS[stage.exit])
        leaves = (LEAVE[state] == stage.exit).astype(np.float32)
        return state, leaves, np.zeros(len(state), np.int64), None

    def take(self, stage, state, rows):
        return state[rows]

    def concat(self, stage, states):
        return np.concatenate(states)


@pytest.mark.parametrize("rebatch", [False, True])
def test_rebatched_and_compacted_predictions_against_the_loop_itself(rebatch):
    # contract.schedule.route serving a long stream of batches of 4 rows drawn with replacement: re-batched, every
    # stage runs full batches and a sample pays p_i T_i(B) / B of each item; compacted, the binomial expectation.
    from contract import get_rule
    from contract.schedule import Stage, route

    table, B = _table(), 4
    rule = get_rule("max_prob")
    stages = [Stage(0, 0.5, rule, 1.0), Stage(1, 0.5, rule, 1.0), Stage(2, None, rule, 1.0)]
    rng = np.random.default_rng(0)
    stream = [rng.integers(0, len(LEAVE), B) for _ in range(6000)]
    backend = _TimedStages(table)
    out = route(stages, backend, stream, rebatch=rebatch)
    assert np.array_equal(out.exits, LEAVE[np.concatenate(stream)])
    collect = float(interpolate(table.grid, table.item("collect").median_s, [B])[0])
    measured = (backend.seconds + collect * len(stream)) / (B * len(stream))
    predicted = _model(B, rebatch=rebatch).time_per_sample([0, 1], LEAVE)
    assert measured == pytest.approx(predicted, rel=0.01)
    if rebatch:   # full batches but for the stream's last few
        assert sum(n < B for n in backend.batches) <= len(stages)
        assert predicted < _model(B).time_per_sample([0, 1], LEAVE)  # concave times: full batches cost less per row


def test_rebatched_time_is_additive_at_any_batch_size():
    table, est = _table(), _model(4, rebatch=True).estimate([0, 1], LEAVE)
    for item, t in est.items.items():
        share = 1.0 if item == "collect" else np.mean([item in _runs(int(e)) for e in LEAVE])
        assert t == pytest.approx(share * table.item(item).median_s[-1] / 4, rel=1e-12)
    assert _model(4, rebatch=True).additive and not _model(4).additive and _model(1).additive
    assert _model(4, rebatch=True).get_params()["rebatch"] is True


def test_a_batch_1_graph_is_charged_per_exit_a_row_leaves_at():
    """With ``path`` items (a bundle's batch-1 graph) for exactly the enabled exits and the final one, at B = 1 a
    max_prob configuration costs the share leaving at each exit times that path's whole call, and nothing else; at
    B > 1, with another rule or other exits, the graphs and steps as before."""
    paths = [TimedItem(f"path:{e}", "path", (t,) * len(GRID), (t,) * len(GRID), (t,) * len(GRID), exit=e)
             for e, t in zip(EXIT_NAMES, (2.0, 5.0, 9.0), strict=True)]
    plain = _table()
    table = _table([*plain.items[:-1], *paths])
    est = TimeCostModel(table, EXIT_UNITS, EXIT_NAMES, batch_size=1).estimate([0, 1], LEAVE, ["max_prob"] * 2)
    want = np.mean(LEAVE == 0) * 2.0 + np.mean(LEAVE == 1) * 5.0 + np.mean(LEAVE == 2) * 9.0
    assert est.time_per_sample_s == pytest.approx(want) and sorted(est.items) == sorted(p.name for p in paths)
    staged = TimeCostModel(plain, EXIT_UNITS, EXIT_NAMES, batch_size=1).estimate([0, 1], LEAVE)
    for args, B in ((([0, 1], LEAVE, ["margin"] * 2), 1), (([0, 1], LEAVE), 2)):
        est = TimeCostModel(table, EXIT_UNITS, EXIT_NAMES, batch_size=B).estimate(*args)
        assert not any(k.startswith("path:") for k in est.items)
    one = np.where(LEAVE == 1, 2, LEAVE)   # exit 1 disabled: its samples go on to the final exit
    est = TimeCostModel(table, EXIT_UNITS, EXIT_NAMES, batch_size=1).estimate([0], one)
    assert not any(k.startswith("path:") for k in est.items) and staged.time_per_sample_s > 0


def test_paths_timed_after_each_other_cost_the_mean_over_consecutive_pairs():
    """With each path's time after each path (``after``), a batch-1 stream of independent rows costs, per row, the
    mean over every ordered pair of rows (previous, this) of this row's path after the previous row's: brute force
    over all pairs of cache rows against the model; each path's item is its rows' share of it."""
    A = {"e0": {"e0": 2.0, "e1": 2.6, "final": 3.1},   # A[prev][this]
         "e1": {"e0": 5.7, "e1": 5.0, "final": 6.2},
         "final": {"e0": 9.8, "e1": 9.4, "final": 9.0}}
    paths = [TimedItem(f"path:{e}", "path", (A[e][e],) * len(GRID), (1.0,) * len(GRID), (20.0,) * len(GRID), exit=e,
                       after={prev: A[prev][e] for prev in EXIT_NAMES}) for e in EXIT_NAMES]
    table = _table([*_table().items[:-1], *paths])
    est = TimeCostModel(table, EXIT_UNITS, EXIT_NAMES, batch_size=1).estimate([0, 1], LEAVE, ["max_prob"] * 2)
    name = {0: "e0", 1: "e1", 2: "final"}
    pairs = [(name[int(a)], name[int(b)]) for a, b in itertools.product(LEAVE, LEAVE)]
    assert est.time_per_sample_s == pytest.approx(np.mean([A[prev][this] for prev, this in pairs]), rel=1e-12)
    for e in EXIT_NAMES:
        mine = [A[prev][this] if this == e else 0.0 for prev, this in pairs]
        assert est.items[f"path:{e}"] == pytest.approx(np.mean(mine), rel=1e-12)
    # the same paths timed only after themselves: each row pays its own path's time, whatever came before
    alone = [TimedItem(p.name, "path", p.median_s, p.min_s, p.max_s, exit=p.exit) for p in paths]
    plain = TimeCostModel(_table([*_table().items[:-1], *alone]), EXIT_UNITS, EXIT_NAMES, batch_size=1)
    want = np.mean([A[name[int(e)]][name[int(e)]] for e in LEAVE])
    assert plain.estimate([0, 1], LEAVE, ["max_prob"] * 2).time_per_sample_s == pytest.approx(want, rel=1e-12)
