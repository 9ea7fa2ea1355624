"""What a valid test can certify at a cache's calibration size: ceilings on the efficiency targets of issue 19.

For each configuration of the population's dp front (every row of the cache pooled, as in ``bench_population.py``)
the paired loss against the base model on the population: mean d (the true drop) and standard deviation s.

- **Normal ceiling.** A test that knew s and saw the true drop on calibration (no noise, no luck) would still need
  d + z * s / sqrt(n_cal) <= asked (z = 1.2816: one-sided at delta 0.1) to certify; the cheapest configuration
  that meets it, over the best front configuration within the asked drop, bounds the efficiency of any valid
  procedure on average at this calibration size (up to lucky draws, which validity bounds by delta).
- **Exact-test oracle.** Per draw (``--draws``), a calibration sample of the usual size drawn from the population;
  every configuration of the *population's* front tested with the exact trinomial test the tool uses; the
  cheapest that passes is taken (not a valid procedure: it picks after looking, and its candidates are the true
  front, not a fitted one). Its mean saving over the best is what no walk of any candidates can beat with this
  test, on average.

Usage: python benchmarks/bench_ceiling.py [--caches demo,S] [--draws 100]; figures go to
benchmarks/results/ceiling.json.
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
from search.certify import trinomial_p_value  # noqa: E402
from search.engines.dp import DPEngine  # noqa: E402
from search.pareto_testing import DEFAULT_DELTA  # noqa: E402

Z = 1.2815515655446004  # the one-sided normal quantile at DEFAULT_DELTA = 0.1


def _oracle(losses: np.ndarray, saving: np.ndarray, n_cal: int, asked: float, draws: int) -> float:
    """Mean saving of the cheapest true-front configuration passing the exact test on a fresh calibration draw."""
    order = np.argsort(-saving)  # cheapest first
    got = []
    for d in range(draws):
        rows = np.random.default_rng([d, 41]).integers(0, losses.shape[1], n_cal)
        sample = losses[:, rows]
        k_plus, k_minus = (sample == 1).sum(axis=1), (sample == -1).sum(axis=1)
        passing = (
            i for i in order
            if trinomial_p_value(n_cal, int(k_plus[i]), int(k_minus[i]), asked, DEFAULT_DELTA) <= DEFAULT_DELTA
        )
        first = next(passing, None)
        got.append(float(saving[first]) if first is not None else 0.0)
    return float(np.mean(got))


def ceiling(cache, draws: int) -> dict:
    pop = Population(cache)
    front = DPEngine(max_configs=None).run(pop.problem)
    base = pop.problem.correct[pop.problem.final_exit].astype(np.int8)
    losses = np.array([base - outcomes(pop.problem, c)[0].astype(np.int8) for c in front.configs], dtype=np.int8)
    d, s = losses.mean(axis=1), losses.std(axis=1)
    saving = 1.0 - front.F[:, 1]
    out = {"population": pop.problem.n_samples, "n_calibration": pop.n_cal, "front_points": len(saving)}
    for asked in ASKED:
        best = float(saving[d <= asked].max())
        ok = d + Z * s / math.sqrt(pop.n_cal) <= asked
        top = float(saving[ok].max()) if ok.any() else 0.0
        oracle = _oracle(losses, saving, pop.n_cal, asked, draws)
        out[f"asked_{100 * asked:g}_points"] = {"best_front_saving": best, "ceiling_saving": top,
                                               "ceiling_efficiency": top / best if best else None,
                                               "exact_oracle_saving": oracle, "exact_oracle_efficiency": oracle / best,
                                               "draws": draws}
        print(f"  asked {100 * asked:g} point: best front saving {best:.4f}, normal ceiling {top:.4f} "
              f"({top / best:.3f} of best), exact-test oracle {oracle:.4f} ({oracle / best:.3f})", flush=True)
    return out


def main(argv=None) -> int:
    assert abs(DEFAULT_DELTA - 0.1) < 1e-12, "Z is the quantile at delta 0.1"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caches", default="demo,S")
    parser.add_argument("--draws", type=int, default=100, help="calibration draws of the exact-test oracle")
    args = parser.parse_args(argv)
    specs = {**{k.split(":")[0]: v for k, v in CACHES.items()}, **SMALL}
    figures = {"delta": DEFAULT_DELTA, "z": Z, "caches": {}}
    for name in filter(None, args.caches.split(",")):
        print(name, flush=True)
        cache = open_cache(bundled_cache_path()) if name == "demo" else make_synthetic_cache(**specs[name])
        figures["caches"][name] = ceiling(cache, args.draws)
    print("saved", save_results("ceiling", figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
