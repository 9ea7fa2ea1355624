"""The dp front under a cap on enabled exits (``max_exits``) against the uncapped dp, same process, interleaved.

On the search benchmark's speed cache (25,000 search samples x 12 positions x 1 head type, seed 0; see
``benchmarks/bench_search.py``) and its 2-head-type variant: best-of-``--repeats`` wall and CPU seconds of dp
uncapped and at each K, with the hypervolume and the size of each front. The target: K = 3 no more than 3x the
uncapped time.

Usage: python benchmarks/bench_max_exits.py [--repeats 5] [--caps 1,3,6]; figures go to
benchmarks/results/max_exits.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from data_cache.synthetic import make_synthetic_cache  # noqa: E402
from search import ExitProblem, run_search  # noqa: E402
from search.indicators import HV  # noqa: E402


def measure(n_head_types: int, caps: list[int], repeats: int) -> dict:
    problem = ExitProblem(make_synthetic_cache(25_000, 12, n_head_types=n_head_types, seed=0))
    runs: dict = {str(k): {"wall": [], "cpu": []} for k in [None, *caps]}
    fronts = {}
    for _ in range(repeats):
        for k in [None, *caps]:
            t0, c0 = time.perf_counter(), time.process_time()
            fronts[str(k)] = run_search(problem, "dp", max_exits=k)
            runs[str(k)]["wall"].append(time.perf_counter() - t0)
            runs[str(k)]["cpu"].append(time.process_time() - c0)
    base = runs["None"]
    out = {}
    for k, r in runs.items():
        f = fronts[k]
        out["uncapped" if k == "None" else f"K={k}"] = {
            "wall_s": min(r["wall"]), "cpu_s": min(r["cpu"]),
            "wall_ratio": min(r["wall"]) / min(base["wall"]), "cpu_ratio": min(r["cpu"]) / min(base["cpu"]),
            "points": len(f), "hv": HV()(f.F), "most_exits": max(len(c.exits) for c in f.configs)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--caps", default="1,3,6")
    args = ap.parse_args()
    caps = [int(c) for c in args.caps.split(",")]
    figures = {"what": "dp front, uncapped vs max_exits=K, 25,000 x 12 positions, best of "
                       f"{args.repeats} interleaved", "caches": {}}
    for heads in (1, 2):
        name = f"25k x 12 pos x {heads} head type{'s' if heads > 1 else ''}"
        figures["caches"][name] = measure(heads, caps, args.repeats)
        for k, row in figures["caches"][name].items():
            print(f"{name}  {k:9s} wall {row['wall_s']:.3f} s ({row['wall_ratio']:.2f}x)  cpu {row['cpu_s']:.3f} s "
                  f"({row['cpu_ratio']:.2f}x)  {row['points']} points  HV {row['hv']:.4f}  "
                  f"<= {row['most_exits']} exits")
    print(save_results("max_exits", figures))


if __name__ == "__main__":
    main()
