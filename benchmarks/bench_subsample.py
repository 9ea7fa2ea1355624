"""How large a subsample the search can fit on: hypervolume lost against a fit on every sample, and time.

On caches of the scale benchmark's generator (50 positions x 5 head types, k=2, 1000 classes) with
search splits of 100k, 200k and 300k samples, dp is fitted once on every search sample and then on
seeded random subsamples of several sizes; each subsample front is scored exactly on every search
sample (as ``python -m search.pareto`` does) and its hypervolume compared with the full fit's. The
same configurations' hypervolume on a holdout split of 50k samples is reported too. Times are CPU
seconds of this process (the wall time on a busy shared machine says little), for the fit and for
the exact scoring pass. The caches are generated once into a folder outside the repository.

Usage: python benchmarks/bench_subsample.py [--caches DIR] [--quick]; figures go to
benchmarks/results/subsample.json. The defaults of --subsample / --subsample-above
(search/subsample.py) are chosen from these figures (docs/search.md).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from data_cache import open_cache  # noqa: E402
from data_cache.synthetic import write_synthetic_cache  # noqa: E402
from search import create_engine  # noqa: E402
from search.exact import SplitEvaluator  # noqa: E402
from search.indicators import HV  # noqa: E402
from search.subsample import FitSample, fit_problem  # noqa: E402

GENERATOR = dict(n_positions=50, n_head_types=5, n_classes=1000, k=2, seed=0)
HOLDOUT = 50_000


def _cache(folder: Path, n_search: int):
    path = folder / f"search{n_search // 1000}k"
    if not (path / "manifest.json").exists():
        t0 = time.perf_counter()
        n = n_search + HOLDOUT
        write_synthetic_cache(path, n, holdout_fraction=HOLDOUT / n, overwrite=True, chunk=1 << 15, **GENERATOR)
        print(f"generated {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    return open_cache(path, skip_integrity_check=True)


def _fit(cache, sample: FitSample | None) -> dict:
    """dp fitted on ``sample`` (every sample for None), scored on all search samples and on holdout."""
    c0 = time.process_time()
    problem = fit_problem(cache, "search", sample)
    c1 = time.process_time()
    front = create_engine("dp").run(problem)
    c2 = time.process_time()
    search = SplitEvaluator.of_problem(problem) if sample is None else SplitEvaluator.like(problem, "search")
    F = search.evaluate(front.configs)
    c3 = time.process_time()
    Fh = SplitEvaluator.like(problem, "holdout").evaluate(front.configs)
    return {"points": len(front), "hv_search": HV()(F), "hv_holdout": HV()(Fh), "cpu_s_read": c1 - c0,
            "cpu_s_fit": c2 - c1, "cpu_s_exact_search_pass": c3 - c2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--caches", type=Path, default=Path(tempfile.gettempdir()) / "exitsearch-bench" / "subsample",
                    help="folder for the generated caches, outside the repository (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="the 100k cache only, fewer sizes and seeds")
    args = ap.parse_args()
    args.caches.mkdir(parents=True, exist_ok=True)
    splits = (100_000,) if args.quick else (100_000, 200_000, 300_000)
    sizes = (16_384, 65_536) if args.quick else (8_192, 16_384, 32_768, 65_536, 131_072)
    seeds = (0,) if args.quick else (0, 1)
    figures = {"generator": GENERATOR, "holdout": HOLDOUT, "caches": {}}
    for n in splits:
        cache = _cache(args.caches, n)
        full = _fit(cache, None)
        print(f"search {n:,}: full fit HV {full['hv_search']:.5f} ({full['points']} points), "
              f"fit {full['cpu_s_fit']:.1f} s CPU", flush=True)
        rows = []
        for m in sizes:
            if m >= n:
                continue
            for seed in seeds:
                r = _fit(cache, FitSample(m, n, seed))
                r.update(subsample=m, seed=seed, hv_loss=1 - r["hv_search"] / full["hv_search"],
                         hv_loss_holdout=1 - r["hv_holdout"] / full["hv_holdout"])
                rows.append(r)
                print(f"  subsample {m:>7,} seed {seed}: HV loss {r['hv_loss']:+.4%} (holdout "
                      f"{r['hv_loss_holdout']:+.4%}), fit {r['cpu_s_fit']:.1f} s + read {r['cpu_s_read']:.1f} s "
                      f"+ exact pass {r['cpu_s_exact_search_pass']:.1f} s CPU", flush=True)
        figures["caches"][str(n)] = {"full": full, "subsamples": rows}
    print("saved", save_results("subsample", figures))


if __name__ == "__main__":
    main()
