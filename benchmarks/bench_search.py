"""Search benchmarks on seeded synthetic caches with realistic structure (data_cache.synthetic).

1. Speed: the dp front on 25,000 search samples x 12 positions x 1 head type (and x 2 head types),
   best of 5 in this process, next to the dp of an earlier revision (``--baseline``, loaded from git
   into a temporary module: the version before the issue-10 speed-up by default) and to greedy, run
   interleaved so that both see the same machine load; wall and CPU seconds and their ratios.
2. Quality: on every benchmark cache, each method's hypervolume on search and holdout, and the cost
   saved at <= 0.5 and <= 1 point top-1 drop on holdout, with the bootstrap spread (sampling noise) of
   dp's advantage over the best baseline.

Usage: python benchmarks/bench_search.py [--quick] [--baseline REV]; figures go to
benchmarks/results/search.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from data_cache.synthetic import make_synthetic_cache  # noqa: E402
from search import ExitProblem, create_engine, run_search  # noqa: E402
from search.engines import _ENGINES  # noqa: E402
from search.indicators import HV, saving_at_drop  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "2f3ff5f"   # main before the issue-10 dp speed-up

METHODS = ("dp", "global", "geometric", "greedy")
CACHES = {
    "A: 50k x 12 pos x 2 heads": dict(n_samples=50_000, n_positions=12, n_head_types=2, seed=1),
    "B: 50k x 12 pos x 2 heads + saver": dict(n_samples=50_000, n_positions=12, n_head_types=2, saver=True, seed=2),
    "C: 100k x 16 pos x 3 heads": dict(n_samples=100_000, n_positions=16, n_head_types=3, seed=3),
}


def _baseline_dp(rev: str):
    """The ``DPEngine`` class of ``search/engines/dp.py`` at git revision ``rev`` (None if unavailable)."""
    try:
        src = subprocess.run(["git", "show", f"{rev}:search/engines/dp.py"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "_dp_baseline.py"
    path.write_bytes(src)
    registered = dict(_ENGINES)                      # loading it must not replace the registered "dp"
    spec = importlib.util.spec_from_file_location("search.engines._dp_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:  # that revision's dp imports names today's package no longer has
        print(f"baseline {rev}: its dp cannot load against today's package ({exc}); no baseline", flush=True)
        return None
    finally:
        _ENGINES.clear()
        _ENGINES.update(registered)
    return module.DPEngine


def speed(repeats: int, rev: str) -> dict:
    baseline = _baseline_dp(rev)
    out = {"baseline_revision": rev if baseline else None}
    for heads in (1, 2):
        problem = ExitProblem(make_synthetic_cache(50_000, 12, n_head_types=heads, seed=1))
        engines = {"dp": create_engine("dp"), "greedy": create_engine("greedy")}
        if baseline is not None:
            engines["dp_baseline"] = baseline()
        times = {m: {"wall": [], "cpu": []} for m in engines}
        for _ in range(repeats):                     # interleaved: every method sees the same load
            for m, engine in engines.items():
                t0, c0 = time.perf_counter(), time.process_time()
                front = run_search(problem, engine)
                times[m]["wall"].append(time.perf_counter() - t0)
                times[m]["cpu"].append(time.process_time() - c0)
                times[m]["points"], times[m]["hv"] = len(front), HV()(front.F)
        row = {m: {"seconds_best": min(t["wall"]), "cpu_seconds_best": min(t["cpu"]), "seconds_all": t["wall"],
                   "points": t["points"], "hv_search": t["hv"]} for m, t in times.items()}
        row["greedy_over_dp"] = row["greedy"]["seconds_best"] / row["dp"]["seconds_best"]
        if baseline is not None:
            row["speedup_over_baseline"] = row["dp_baseline"]["seconds_best"] / row["dp"]["seconds_best"]
            row["speedup_over_baseline_cpu"] = row["dp_baseline"]["cpu_seconds_best"] / row["dp"]["cpu_seconds_best"]
            row["baseline_greedy_over_dp"] = row["greedy"]["seconds_best"] / row["dp_baseline"]["seconds_best"]
        out[f"25k_12x{heads}"] = row
    return out


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
    ap.add_argument("--baseline", default=BASELINE,
                    help="git revision whose dp is timed alongside (default %(default)s)")
    args = ap.parse_args()
    figures = {"speed": speed(1 if args.quick else 5, args.baseline)}
    for name, s in figures["speed"].items():
        if not isinstance(s, dict):
            continue
        line = (f"dp front {name}: {s['dp']['seconds_best']:.3f} s ({s['dp']['cpu_seconds_best']:.3f} s CPU, "
                f"{s['dp']['points']} configurations, HV {s['dp']['hv_search']:.5f}); greedy "
                f"{s['greedy']['seconds_best']:.3f} s, greedy/dp = {s['greedy_over_dp']:.2f}x")
        if "speedup_over_baseline" in s:
            line += (f"; baseline dp {s['dp_baseline']['seconds_best']:.3f} s (HV "
                     f"{s['dp_baseline']['hv_search']:.5f}): {s['speedup_over_baseline']:.2f}x faster "
                     f"({s['speedup_over_baseline_cpu']:.2f}x in CPU time)")
        print(line)
    figures["quality"] = quality(50 if args.quick else 200, np.random.default_rng(0))
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
