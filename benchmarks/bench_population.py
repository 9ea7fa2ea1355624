"""Certified answers under the population protocol: validity, efficiency and "nothing certified" rates.

Each benchmark cache's rows (search and holdout; the demo also its calibration split) form a population.
A draw takes a search split of the usual size from it with replacement (the demo: a search and a
calibration split of its sizes; synthetic caches: a search split cut into fit and calibration at the
default fraction), answers "cheapest within X points, certified at delta = 0.1", and measures the answer on
the whole population. Reported per cache, asked drop and procedure (sequence order, tempered candidates,
fixed-sequence or fallback walk; every procedure sees the same draws):
- validity: the share of draws whose population drop exceeds the asked drop (<= delta within MC error);
- efficiency: mean population saving of the answer / the saving of the best configuration of the
  population's own dp front within the asked drop on the population;
- nothing certified: the share of draws where nothing cheaper than the base model was certified.

Usage: python benchmarks/bench_population.py [--draws 100] [--caches A,B,C,S,demo]
    [--orders cost+temper,agree+temper,agree+temper+fallback] [--fraction 0.5] [--out population_fallback]
(``--fraction``: the calibration share of a synthetic cache's search split; the demo has its own calibration split.)
Figures go to benchmarks/results/<out>.json (population.json: the former orders; population_fallback.json:
the agreement order and the fallback walk against the cost order).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import describe_machine, save_results  # noqa: E402
from benchmarks.bench_certify import SMALL, _pooled  # noqa: E402
from benchmarks.bench_search import CACHES  # noqa: E402
from data_cache import open_cache  # noqa: E402
from data_cache.bundled import bundled_cache_path  # noqa: E402
from data_cache.cli_types import positive_int  # noqa: E402
from data_cache.synthetic import make_synthetic_cache  # noqa: E402
from search import ExitProblem  # noqa: E402
from search.calibration import DEFAULT_FRACTION, Roles  # noqa: E402
from search.engines.dp import DPEngine  # noqa: E402
from search.indicators import saving_at_drop  # noqa: E402
from search.pareto_testing import DEFAULT_DELTA, certify_drop  # noqa: E402

ASKED = (0.005, 0.01)


class Population:
    """A cache's rows pooled into one problem, and draws of fit / calibration parts from it."""

    def __init__(self, cache, fraction: float = DEFAULT_FRACTION):
        self.has_calibration = "calibration" in cache.splits()
        self.fraction = fraction
        splits = ("search", "calibration", "holdout") if self.has_calibration else ("search", "holdout")
        self.problem = ExitProblem(_pooled(cache, splits), "pool")
        self.n_search = cache.n_samples("search")
        self.n_cal = cache.n_samples("calibration") if self.has_calibration else int(
            round(self.n_search * fraction))
        self.n_fit = self.n_search if self.has_calibration else self.n_search - self.n_cal
        front = DPEngine().run(self.problem)
        self.F = front.F
        self.base_accuracy = self.problem.base.accuracy

    def draw(self, seed: int) -> Roles:
        rng = np.random.default_rng([seed, 29])
        n = self.problem.n_samples
        fit = self.problem.take(rng.integers(0, n, self.n_fit))
        cal = self.problem.take(rng.integers(0, n, self.n_cal))
        return Roles(fit, cal, "calibration" if self.has_calibration else "search",
                     None if self.has_calibration else self.fraction, seed)

    def measure(self, config) -> tuple[float, float]:
        ev = self.problem.evaluate_one(config)
        return self.base_accuracy - ev.accuracy, 1.0 - ev.relative_cost


def _procedure(spec: str) -> dict:
    """certify_drop's keywords for ``order[+temper|+temper9][+fallback]``."""
    order, *extras = spec.split("+")
    temper = {"temper": True, "temper9": tuple(np.arange(1, 10) / 10)}
    return {"order": order, "temper": next((temper[e] for e in extras if e in temper), False),
            "procedure": "fallback" if "fallback" in extras else "fixed"}


def run_cache(name: str, cache, draws: int, orders: list[str], fraction: float = DEFAULT_FRACTION) -> dict:
    pop = Population(cache, fraction)
    best = {a: saving_at_drop(pop.F, pop.base_accuracy, a) for a in ASKED}
    half = {a: saving_at_drop(pop.F, pop.base_accuracy, a / 2) for a in ASKED}
    rows = {o: {a: [] for a in ASKED} for o in orders}
    t0 = time.perf_counter()
    for d in range(draws):
        roles = pop.draw(d)
        fit_front = DPEngine().run(roles.fit)
        for o in orders:
            for a in ASKED:
                ans = certify_drop(roles, a, delta=DEFAULT_DELTA, fit_front=fit_front, **_procedure(o))
                drop, saving = pop.measure(ans.config)
                rows[o][a].append((drop, saving, ans.certificate is not None and saving > 0))
        if d % 20 == 19:
            print(f"  {name}: {d + 1}/{draws} draws, {time.perf_counter() - t0:.0f} s", flush=True)
    out = {"population": pop.problem.n_samples, "n_fit": pop.n_fit, "n_calibration": pop.n_cal,
           "seconds": time.perf_counter() - t0, "orders": {}}
    se = math.sqrt(DEFAULT_DELTA * (1 - DEFAULT_DELTA) / draws)
    for o in orders:
        out["orders"][o] = {}
        for a in ASKED:
            r = np.array(rows[o][a], dtype=float)
            s = {"draws": draws, "violation_rate": float((r[:, 0] > a).mean()), "mc_se": se,
                 "mean_saving": float(r[:, 1].mean()), "best_saving": best[a],
                 "efficiency": float(r[:, 1].mean() / best[a]) if best[a] else None,
                 "nothing_certified": float(1.0 - r[:, 2].mean()),
                 "front_within_half_saves": half[a]}
            out["orders"][o][str(a)] = s
            print(f"  {name} {o:>9} at {100 * a:.1f} pt: violations {s['violation_rate']:.3f} (s.e. {se:.3f}), "
                  f"efficiency {s['efficiency'] if s['efficiency'] is None else round(s['efficiency'], 3)}, "
                  f"nothing certified {s['nothing_certified']:.2f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=positive_int, default=100)
    ap.add_argument("--caches", default="A,B,C,S,demo")
    ap.add_argument("--orders", default="cost+temper,agree+temper,agree+temper+fallback",
                    help="procedures to compare: an order (agree, cost, smoothed, fit_z), '+temper' adds tempered "
                         "candidates, '+fallback' walks with the fallback procedure")
    ap.add_argument("--fraction", type=float, default=DEFAULT_FRACTION,
                    help="calibration share of the search split, for caches without a calibration split")
    ap.add_argument("--out", default="population_fallback")
    args = ap.parse_args()
    specs = {**{k.split(":")[0]: v for k, v in CACHES.items()}, **SMALL}
    figures = {"delta": DEFAULT_DELTA, "asked_drop_points": [100 * a for a in ASKED], "machine": describe_machine(),
               "calibration_fraction": args.fraction, "caches": {}}
    for name in filter(None, args.caches.split(",")):
        cache = open_cache(bundled_cache_path()) if name == "demo" else make_synthetic_cache(**specs[name])
        print(f"population protocol on {name}", flush=True)
        figures["caches"][name] = run_cache(name, cache, args.draws, args.orders.split(","), args.fraction)
        path = save_results(args.out, figures)   # after each cache: a long run keeps what it measured
    print("saved", path)


if __name__ == "__main__":
    main()
