"""What any valid test can certify at a cache's calibration size: the efficiency ceiling of issue 19's targets.

For each configuration of the population's dp front (every row of the cache pooled, as in ``bench_population.py``)
the paired loss against the base model on the population: mean d (the true drop) and standard deviation s. A test
that knew s and saw the true drop on calibration (no noise, no luck) would still need d + z * s / sqrt(n_cal) <=
asked (z = 1.2816: one-sided at delta 0.1) to certify; the cheapest configuration that meets it is the ceiling. Its
saving over the best front configuration within the asked drop is the efficiency no valid procedure reaches on
average at this calibration size (up to lucky draws, which validity bounds by delta).

Usage: python benchmarks/bench_ceiling.py [--caches demo,S]; figures go to benchmarks/results/ceiling.json.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from benchmarks.bench_certify import SMALL  # noqa: E402
from benchmarks.bench_population import ASKED, Population  # noqa: E402
from benchmarks.bench_search import CACHES  # noqa: E402
from data_cache import open_cache  # noqa: E402
from data_cache.bundled import bundled_cache_path  # noqa: E402
from data_cache.synthetic import make_synthetic_cache  # noqa: E402
from search.certificates import outcomes  # noqa: E402
from search.engines.dp import DPEngine  # noqa: E402
from search.pareto_testing import DEFAULT_DELTA  # noqa: E402

Z = 1.2815515655446004  # the one-sided normal quantile at DEFAULT_DELTA = 0.1


def ceiling(cache) -> dict:
    pop = Population(cache)
    front = DPEngine(max_configs=None).run(pop.problem)
    base = pop.problem.correct[pop.problem.final_exit].astype(np.int64)
    rows = []
    for config, F in zip(front.configs, front.F, strict=True):
        loss = base - outcomes(pop.problem, config)[0].astype(np.int64)
        rows.append((float(loss.mean()), float(loss.std()), 1.0 - float(F[1])))
    d, s, saving = np.array(rows).T
    out = {"population": pop.problem.n_samples, "n_calibration": pop.n_cal, "front_points": len(rows)}
    for asked in ASKED:
        best = float(saving[d <= asked].max())
        ok = d + Z * s / math.sqrt(pop.n_cal) <= asked
        top = float(saving[ok].max()) if ok.any() else 0.0
        out[f"asked_{100 * asked:g}_points"] = {"best_front_saving": best, "ceiling_saving": top,
                                               "ceiling_efficiency": top / best if best else None}
        print(f"  asked {100 * asked:g} point: best front saving {best:.4f}, ceiling {top:.4f} "
              f"({top / best:.3f} of best)", flush=True)
    return out


def main(argv=None) -> int:
    assert abs(DEFAULT_DELTA - 0.1) < 1e-12, "Z is the quantile at delta 0.1"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caches", default="demo,S")
    args = parser.parse_args(argv)
    specs = {**{k.split(":")[0]: v for k, v in CACHES.items()}, **SMALL}
    figures = {"delta": DEFAULT_DELTA, "z": Z, "caches": {}}
    for name in filter(None, args.caches.split(",")):
        print(name, flush=True)
        cache = open_cache(bundled_cache_path()) if name == "demo" else make_synthetic_cache(**specs[name])
        figures["caches"][name] = ceiling(cache)
    print("saved", save_results("ceiling", figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
