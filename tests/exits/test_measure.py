"""exits.measure.CacheComparison: what both validations compare a measured run with (numpy only, no model)."""
from __future__ import annotations

import dataclasses

import numpy as np

from data_cache.synthetic import make_synthetic_cache
from exits.measure import CacheComparison
from search.config import ExitConfig
from search.problem import ExitProblem


def _setup():
    cache = make_synthetic_cache(400, 3, seed=3)
    config = ExitConfig((0, 1), (0.9, 0.8), "max_prob")
    problem = ExitProblem(cache, "holdout")
    want_exit = problem.assign(ExitConfig((0, 1), (0.9, 0.8), "max_prob"))
    want_pred = np.asarray(cache.topk_ids("holdout")[want_exit, 0, np.arange(len(want_exit))])
    return cache, config, problem, want_exit, want_pred


def test_a_run_like_the_cache_agrees_and_the_cache_numbers_are_predicted():
    cache, config, problem, want_exit, want_pred = _setup()
    comparison = CacheComparison(cache, "holdout", 1e-6)
    predicted, agreement = comparison.compare(config, want_exit, want_pred)
    ev = problem.evaluate_one(ExitConfig((0, 1), (0.9, 0.8), "max_prob"))
    assert predicted == {"accuracy": ev.accuracy, "relative_cost": ev.relative_cost,
                         "exit_fractions": list(ev.exit_fractions)}
    assert agreement == {"agreement": 1.0, "n_disagree": 0, "n_disagree_near_threshold": 0, "n_disagree_exit": 0,
                         "n_disagree_prediction": 0}
    # the export's own numbers are never taken on its word: the cache's evaluation is reported (issue 20)
    exported = dataclasses.replace(config, predicted={"holdout": {"accuracy": 0.5, "relative_cost": 0.25}})
    assert comparison.compare(exported, want_exit, want_pred)[0]["accuracy"] == ev.accuracy


def test_disagreements_are_counted_by_kind_and_near_a_threshold_apart():
    cache, config, problem, want_exit, want_pred = _setup()
    scores = problem.scores
    gap = np.abs(scores[config.exits[0]].astype(np.float64) - config.thresholds[0])
    near, far = int(np.argmin(gap)), int(np.argmax(gap))
    got_exit, got_pred = want_exit.copy(), want_pred.copy()
    got_exit[near] = got_exit[far] = -1       # two samples leave elsewhere
    got_pred[far] = got_pred[far] + 1         # one of them with another prediction too
    tolerance = float(gap[near]) + 1e-9
    _, agreement = CacheComparison(cache, "holdout", tolerance).compare(config, got_exit, got_pred)
    assert agreement == {"agreement": 1.0 - 2 / len(want_exit), "n_disagree": 2, "n_disagree_near_threshold": 1,
                         "n_disagree_exit": 2, "n_disagree_prediction": 1}
    # with a tolerance below the nearest gap, neither counts as float rounding
    _, strict = CacheComparison(cache, "holdout", float(gap[near]) / 2).compare(config, got_exit, got_pred)
    assert gap[near] > 0 and strict["n_disagree_near_threshold"] == 0 and strict["n_disagree"] == 2


def test_an_objective_other_than_macs_is_compared_in_macs_and_flagged():
    """A latency export's costs are never set beside measured MACs: the cache's relative MACs are, in one note."""
    from exits.measure import format_rows

    cache, config, problem, want_exit, want_pred = _setup()
    exported = dataclasses.replace(config, predicted={"holdout": {"accuracy": 0.5, "relative_cost": 0.25}})
    ev = problem.evaluate_one(ExitConfig((0, 1), (0.9, 0.8), "max_prob"))
    predicted, _ = CacheComparison(cache, "holdout", 1e-6, "latency").compare(exported, want_exit, want_pred)
    assert predicted["relative_cost"] == ev.relative_cost != 0.25 and predicted["relative_cost_objective"] == 0.25
    row = {"id": "dp-0000", "exits": [], "predicted": predicted, "agreement": 1.0, "n_disagree_near_threshold": 0,
           "mac_estimate_speedup": 1.0, "measured": {"accuracy": 0.5, "relative_cost": ev.relative_cost}}
    report = {"split": "holdout", "n_samples": 10, "configs": [row],
              "base": {"measured": {"accuracy": 0.5, "macs_per_sample": 1e6}, "predicted": {"accuracy": 0.5}}}
    assert not any(line.startswith("note:") for line in format_rows(report, "base", "footnote"))
    lines = format_rows({**report, "objective": "latency"}, "base", "footnote")
    assert lines[-1].startswith("note: objective 'latency' (latency_s) is not what a run measures: cost pred / cost "
                                "meas are the cache's and the run's relative MACs")


def _timed_row(cid: str, speedup_mean: float, speedup_median: float, n_exits: int = 3) -> dict:
    return {"id": cid, "exits": [{"name": f"e{i}", "threshold": 0.9} for i in range(n_exits)], "agreement": 1.0,
            "n_disagree_near_threshold": 0, "mac_estimate_speedup": 2.0, "throughput_speedup_b64": 1.5,
            "predicted": {"accuracy": 0.9, "relative_cost": 0.5}, "measured": {"accuracy": 0.9, "relative_cost": 0.5},
            "latency_b1": {"speedup_mean": speedup_mean, "speedup_median": speedup_median, "base_mean_s": 1.5e-4}}


def test_batch1_mean_and_median_and_why_slower():
    """Batch 1 is shown by mean and median; a configuration slower than its base by mean gets one line saying
    why (what its exits add per call) and the remedy; the MAC estimate is never called an ideal."""
    from exits.measure import format_rows, slower_at_batch1

    report = {"split": "holdout", "n_samples": 10,
              "configs": [_timed_row("fast", 1.4, 1.5), _timed_row("slow", 0.81, 1.02)],
              "base": {"measured": {"accuracy": 0.9, "macs_per_sample": 1e6}, "predicted": {"accuracy": 0.9}}}
    lines = format_rows(report, "base", "footnote", overhead=lambda e: f"its {len(e['exits'])} exits make 7 calls")
    assert lines[1].endswith("MAC est  b64 x b1 mean b1 med")
    assert "ideal" not in "\n".join(lines) and "MAC est" in lines[1]
    assert lines[2].split()[-2:] == ["1.40", "1.50"] and lines[3].split()[-2:] == ["0.81", "1.02"]
    why = [line for line in lines if line.startswith("slow:")]
    assert len(why) == 1 and not any(line.startswith("fast:") for line in lines)
    assert "mean speedup 0.81x, base 0.150 ms per image" in why[0] and "its 3 exits make 7 calls" in why[0]
    assert "--max-exits" in why[0] and "--objective time" in why[0] and "--batch-size 1" in why[0]
    assert slower_at_batch1(_timed_row("x", 1.0, 0.5), None) == ""          # the median alone does not count
    assert "each of its 3 enabled exits adds a head and a step" in slower_at_batch1(_timed_row("x", 0.5, 0.5), None)
    untimed = {k: v for k, v in _timed_row("x", 0.5, 0.5).items() if k != "latency_b1"}
    assert slower_at_batch1(untimed, None) == ""
