"""Search benchmarks on seeded synthetic caches with realistic structure (data_cache.synthetic).

1. Speed: the dp front at 50,000 samples x 12 positions x 2 head types, next to greedy in the same
   process (ratio reported).
2. Quality: on every benchmark cache, each method's hypervolume on search and holdout, and the cost
   saved at <= 0.5 and <= 1 point top-1 drop on holdout, with the bootstrap spread (sampling noise) of
   dp's advantage over the best baseline.

Usage: python benchmarks/bench_search.py [--quick]; figures go to benchmarks/results/search.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from data_cache.synthetic import make_synthetic_cache  # noqa: E402
from search import ExitProblem, run_search  # noqa: E402
from search.indicators import HV, saving_at_drop  # noqa: E402

METHODS = ("dp", "global", "geometric", "greedy")
CACHES = {
    "A: 50k x 12 pos x 2 heads": dict(n_samples=50_000, n_positions=12, n_head_types=2, seed=1),
    "B: 50k x 12 pos x 2 heads + saver": dict(n_samples=50_000, n_positions=12, n_head_types=2, saver=True, seed=2),
    "C: 100k x 16 pos x 3 heads": dict(n_samples=100_000, n_positions=16, n_head_types=3, seed=3),
}


def speed(repeats: int) -> dict:
    problem = ExitProblem(make_synthetic_cache(50_000, 12, n_head_types=2, seed=1))
    times = {}
    for method in ("dp", "greedy"):
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            front = run_search(problem, method)
            runs.append(time.perf_counter() - t0)
        times[method] = {"seconds_best": min(runs), "seconds_all": runs, "points": len(front)}
    times["greedy_over_dp"] = times["greedy"]["seconds_best"] / times["dp"]["seconds_best"]
    return times


def _per_sample(problem, configs):
    """Correctness ``(n_configs, n)`` and cost ``(n_configs, n)`` of each config on each sample."""
    n = problem.n_samples
    right = np.empty((len(configs), n), dtype=bool)
    cost = np.empty((len(configs), n))
    for i, c in enumerate(configs):
        leave = problem.assign(c)
        right[i] = problem.correct[leave, np.arange(n)]
        lookup = np.zeros(problem.n_exits)
        lookup[list(c.exits) + [problem.final_exit]] = problem.costs.exit_costs(c.exits)
        cost[i] = lookup[leave] / problem.costs.base_cost
    return right, cost


def _saving(right, cost, base_right, w, drop):
    acc, rel = right @ w, cost @ w
    ok = acc >= base_right @ w - drop - 1e-12
    return 1.0 - rel[ok].min() if ok.any() else 0.0


def quality(n_boot: int, rng) -> dict:
    out = {}
    for name, spec in CACHES.items():
        search = ExitProblem(make_synthetic_cache(**spec))
        holdout = search.on_split("holdout")
        rows, per = {}, {}
        for method in METHODS:
            front = run_search(search, method)
            Fh = holdout.evaluate(front.configs)
            rows[method] = {"points": len(front), "hv_search": HV()(front.F), "hv_holdout": HV()(Fh),
                            "save_0.5": saving_at_drop(Fh, holdout.base.accuracy, 0.005),
                            "save_1": saving_at_drop(Fh, holdout.base.accuracy, 0.01),
                            "evals": front.n_evals, "seconds": front.exec_time}
            per[method] = _per_sample(holdout, front.configs)
        base_right = holdout.correct[holdout.final_exit]
        spread = {}
        for drop in (0.005, 0.01):
            diffs = []
            for _ in range(n_boot):
                w = rng.multinomial(holdout.n_samples, np.full(holdout.n_samples, 1 / holdout.n_samples))
                w = w / holdout.n_samples
                dp = _saving(*per["dp"], base_right, w, drop)
                best = max(_saving(*per[m], base_right, w, drop) for m in METHODS if m != "dp")
                diffs.append(dp - best)
            spread[f"dp_minus_best_baseline_save_{drop}"] = {
                "mean": float(np.mean(diffs)), "p2.5": float(np.percentile(diffs, 2.5)),
                "p97.5": float(np.percentile(diffs, 97.5))}
        out[name] = {"methods": rows, "bootstrap": spread, "base_holdout_accuracy": holdout.base.accuracy,
                     "dp_highest_hv_search": max(rows, key=lambda m: rows[m]["hv_search"]) == "dp"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and bootstrap samples")
    args = ap.parse_args()
    figures = {"speed_50k_12x2": speed(1 if args.quick else 5),
               "quality": quality(50 if args.quick else 200, np.random.default_rng(0))}
    s = figures["speed_50k_12x2"]
    print(f"dp front 50k x 12 x 2: {s['dp']['seconds_best']:.3f} s ({s['dp']['points']} configurations); "
          f"greedy {s['greedy']['seconds_best']:.3f} s; greedy/dp = {s['greedy_over_dp']:.1f}x")
    for name, q in figures["quality"].items():
        print(f"\n{name} (holdout base accuracy {q['base_holdout_accuracy']:.4f})")
        print(f"{'method':<10} {'points':>6} {'HV search':>9} {'HV holdout':>10} {'save@0.5':>8} {'save@1':>7} "
              f"{'seconds':>8}")
        for m, r in q["methods"].items():
            print(f"{m:<10} {r['points']:>6} {r['hv_search']:>9.4f} {r['hv_holdout']:>10.4f} "
                  f"{r['save_0.5'] or 0:>8.1%} {r['save_1'] or 0:>7.1%} {r['seconds']:>8.2f}")
        for k, v in q["bootstrap"].items():
            print(f"  {k}: mean {v['mean']:+.2%}, 95% bootstrap interval [{v['p2.5']:+.2%}, {v['p97.5']:+.2%}]")
    print("\nsaved", save_results("search", figures))


if __name__ == "__main__":
    main()
