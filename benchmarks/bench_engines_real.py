"""Population engines against dp on real caches, unseeded, objective MACs (issue 17, "Engines").

Per cache (default: the bundled Fashion-MNIST demo cache, ``data_cache.bundled.bundled_cache_path()``):
dp unthinned (``max_configs=None``) as the reference; nsga2 at ``--evals`` evaluations (default 20,000) for
``--nsga2-seeds`` seeds; optuna with its NSGA-II sampler at ``--evals`` trials for ``--optuna-seeds`` seeds
(its sampler scans every earlier trial on each ask, so a run grows with the square of the trials). None is
seeded with dp. Reported per run: hypervolume (reference point (1, 1)) on the search split and of the
non-dominated holdout re-scores, each over dp's; per relative-cost band, how far (points of error) the run's
front stays above dp's points and how many it misses by more than 0.1 point; evaluations, seconds.

Usage: python benchmarks/bench_engines_real.py [CACHE ...] [--evals N] [--nsga2-seeds N] [--optuna-seeds N]
       [--name NAME]; figures go to benchmarks/results/NAME.json (default engines_real).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from data_cache import open_cache  # noqa: E402
from data_cache.bundled import bundled_cache_path  # noqa: E402
from data_cache.cli_types import non_negative_int, positive_int  # noqa: E402
from data_cache.errors import CacheError  # noqa: E402
from search import Budget, ExitProblem, create_engine  # noqa: E402
from search.front import non_dominated  # noqa: E402
from search.indicators import HV  # noqa: E402

COST_BANDS = (0.0, 0.25, 0.5, 0.75, 1.01)
MISS_TOLERANCE = 0.001  # a dp point is missed when the run's best point at no higher cost has 0.1 point more error


def describe(cache, problem: ExitProblem) -> dict:
    """What the cache is: model, dataset, exits, positions, split sizes, base error."""
    prov = cache.meta.provenance or {}
    return {"path": str(cache.path), "model": (prov.get("model") or {}).get("name"),
            "dataset": (prov.get("dataset") or {}).get("name"), "exits": len(cache.meta.exits) - 1,
            "positions": problem.n_positions, "splits": dict(cache.meta.splits),
            "base_error_search": float(problem.base.error), "fingerprint": cache.fingerprint}


def gaps(F_run: np.ndarray, F_dp: np.ndarray) -> dict:
    """Where a run falls short of dp, per relative-cost band: for each dp point, the error of the run's best
    point at no higher cost minus dp's (points of error, 0 when the run matches or beats it); the band's
    largest and mean gap, the dp points cheaper than all of the run's, and how many dp points it misses
    (cheaper than all, or by more than MISS_TOLERANCE)."""
    cheaper = F_run[None, :, 1] <= F_dp[:, None, 1] + 1e-12
    covered = cheaper.any(axis=1)
    best = np.where(cheaper, F_run[None, :, 0], np.inf).min(axis=1)
    gap = np.where(covered, np.maximum(best - F_dp[:, 0], 0.0), 0.0)
    out = {}
    for lo, hi in zip(COST_BANDS[:-1], COST_BANDS[1:], strict=True):
        band = (F_dp[:, 1] >= lo) & (F_dp[:, 1] < hi)
        if band.any():
            g = gap[band & covered]
            out[f"cost {lo:.2f}-{min(hi, 1.0):.2f}"] = {
                "dp_points": int(band.sum()), "below_run_cheapest": int((band & ~covered).sum()),
                "missed": int((band & ~covered).sum() + (g > MISS_TOLERANCE).sum()),
                "max_gap_points": 100 * float(g.max(initial=0.0)),
                "mean_gap_points": 100 * float(g.mean() if g.size else 0.0)}
    return out


def runs(evals: int, nsga2_seeds: int, optuna_seeds: int) -> dict:
    """Engine, budget and seed of every run; dp first (the reference)."""
    out = {"dp": (lambda: create_engine("dp", max_configs=None), None, 0)}
    for s in range(nsga2_seeds):
        out[f"nsga2 (seed {s})"] = (lambda: create_engine("nsga2", pop_size=100), evals, s)
    for s in range(optuna_seeds):
        out[f"optuna nsga2 sampler (seed {s})"] = (lambda: create_engine("optuna", sampler="nsga2"), evals, s)
    return out


def bench_cache(cache, evals: int, nsga2_seeds: int, optuna_seeds: int) -> dict:
    """Every run on one cache: hypervolume on search and holdout, over dp's, misses, evaluations, seconds."""
    search = ExitProblem(cache, "search")
    holdout = search.on_split("holdout")
    hv = HV()
    table, ref = {}, None
    print(f"{cache.path}: {describe(cache, search)['model']}, {search.n_positions} positions", flush=True)
    for name, (make, n, seed) in runs(evals, nsga2_seeds, optuna_seeds).items():
        front = make().run(search, budget=None if n is None else Budget(max_evals=n), seed=seed)
        Fh = holdout.evaluate(front.configs)
        row = {"seed": seed, "points": len(front), "evaluations": front.n_evals, "seconds": front.exec_time,
               "hv_search": hv(front.F), "hv_holdout": hv(Fh[non_dominated(Fh)]), "message": front.message}
        if ref is None:
            ref = (row, front.F)
        row["hv_search_over_dp"] = row["hv_search"] / ref[0]["hv_search"]
        row["hv_holdout_over_dp"] = row["hv_holdout"] / ref[0]["hv_holdout"]
        row["gap_to_dp"] = gaps(front.F, ref[1])
        table[name] = row
        print(f"  {name:32s} {row['hv_search_over_dp']:7.4f} {row['hv_holdout_over_dp']:7.4f} "
              f"{front.n_evals:>10d} evals {front.exec_time:7.1f} s", flush=True)
        for band, g in row["gap_to_dp"].items():
            if g["missed"]:
                print(f"    {band}: misses {g['missed']} of {g['dp_points']} dp points by > 0.1 point "
                      f"(max {g['max_gap_points']:.2f}, mean {g['mean_gap_points']:.3f}; "
                      f"{g['below_run_cheapest']} cheaper than all its points)", flush=True)
    return {"cache": describe(cache, search), "runs": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("caches", nargs="*", type=Path, help="cache folders (default: the bundled demo cache)")
    ap.add_argument("--evals", type=positive_int, default=20_000, help="evaluations (trials) per engine run")
    ap.add_argument("--nsga2-seeds", type=non_negative_int, default=3)
    ap.add_argument("--optuna-seeds", type=non_negative_int, default=1)
    ap.add_argument("--name", default="engines_real", help="results file name under benchmarks/results/")
    args = ap.parse_args()
    t0, load0 = time.perf_counter(), Path("/proc/loadavg").read_text().split()[:3]
    caches = {}
    for path in args.caches or [bundled_cache_path()]:
        try:  # every cache opened (and checked) before any run
            caches[str(path)] = open_cache(path)
        except CacheError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        if not {"search", "holdout"} <= set(caches[str(path)].meta.splits):
            print(f"error: {path}: needs a search and a holdout split", file=sys.stderr)
            sys.exit(2)
    results = {p: bench_cache(c, args.evals, args.nsga2_seeds, args.optuna_seeds) for p, c in caches.items()}
    import optuna
    import pymoo
    figures = {"versions": {"pymoo": pymoo.__version__, "optuna": optuna.__version__},
               "objective": "macs", "seeded_with_dp": False, "evaluations": args.evals, "caches": results,
               "total_seconds": time.perf_counter() - t0, "loadavg_at_start": load0,
               "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3]}
    path = save_results(args.name, figures)
    print(f"-> {path} ({figures['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
