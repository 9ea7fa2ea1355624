"""The learned gate (``--rules max_prob,gate``) against ``max_prob`` alone: certified saving on the same draws.

The population protocol of ``bench_rules.py``: a cache's rows (every split) are the population; each draw takes
a search split of the cache's usual size from it (without replacement), cuts it into fit and calibration parts,
fits the gate at every exit on the fit part alone (``ExitProblem(fit_rows=...)``), searches the fit part with dp
(``max_prob`` alone, then ``max_prob`` and ``gate`` chosen per exit, on the same draw), certifies the cheapest
configuration within 0.5 and 1 point (Pareto Testing, the default bound and delta) and measures the answer on
the whole population (the gate scored there with the params fitted on the draw's fit part).

Caches: the bundled demo and the small synthetic cache S of ``bench_rules.py``.

Usage: python benchmarks/bench_gate.py [--draws N]; figures go to benchmarks/results/gate.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from benchmarks.bench_rules import ASKED, SMALL, _population, _sizes, summarise  # noqa: E402
from data_cache import open_cache  # noqa: E402
from data_cache.bundled import bundled_cache_path  # noqa: E402
from data_cache.cli_types import positive_int  # noqa: E402
from data_cache.synthetic import make_synthetic_cache  # noqa: E402
from search import ExitProblem  # noqa: E402
from search.calibration import DEFAULT_FRACTION, Roles  # noqa: E402
from search.engines.dp import DPEngine  # noqa: E402
from search.pareto_testing import DEFAULT_DELTA, certify_drop  # noqa: E402

LABELS = ("max_prob", "max_prob+gate")


def _draw(population, single: ExitProblem, d: int, n_fit: int, n_cal: int) -> dict:
    """One draw: both settings certified at every asked drop, measured on the population."""
    perm = np.random.default_rng([d, 23]).permutation(single.n_samples)[: n_fit + n_cal]
    fit_idx, cal_idx = np.sort(perm[:n_fit]), perm[n_fit:]
    gated = ExitProblem(population, "pool", rules=("max_prob", "gate"), fit_rows=fit_idx)
    out = {}
    for label, problem in zip(LABELS, (single, gated), strict=True):
        roles = Roles(problem.take(fit_idx), problem.take(cal_idx), "search", DEFAULT_FRACTION, d)
        front = DPEngine().run(roles.fit)
        for asked in ASKED:
            ans = certify_drop(roles, asked, delta=DEFAULT_DELTA, fit_front=front)
            ev = problem.evaluate_one(ans.config)
            out[(label, asked)] = {
                "certified": ans.certificate is not None,
                "saving": 1.0 - ev.relative_cost,
                "drop": single.base.accuracy - ev.accuracy,
                "uses_gate": "gate" in ans.config.rule_names,
            }
    return out


def run_cache(name: str, cache, draws: int) -> dict:
    population = _population(cache)
    single = ExitProblem(population, "pool")
    n_fit, n_cal = _sizes(cache)
    rows: dict = {}
    t0 = time.perf_counter()
    for d in range(draws):
        for key, row in _draw(population, single, d, n_fit, n_cal).items():
            rows.setdefault(key, []).append(row)
        print(f"  {name}: draw {d + 1}/{draws}, {time.perf_counter() - t0:.0f} s", flush=True)
    out = {"population": single.n_samples, "fit": n_fit, "calibration": n_cal, "draws": draws,
           "seconds": time.perf_counter() - t0}
    for asked in ASKED:
        by = {label: rows[(label, asked)] for label in LABELS}
        out[f"asked_{100 * asked:g}_points"] = summarise(by, LABELS[0], LABELS[1], asked,
                                                          ("uses_gate", "answer_uses_gate_share"))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=positive_int, default=10, help="draws per cache")
    args = parser.parse_args(argv)
    caches = {}
    demo = bundled_cache_path()
    if demo is not None:
        caches["demo (bundled Fashion-MNIST)"] = open_cache(demo)
    for name, spec in SMALL.items():
        caches[name] = make_synthetic_cache(**spec)
    figures = {"delta": DEFAULT_DELTA, "asked_points": [100 * a for a in ASKED], "caches": {}}
    for name, cache in caches.items():
        print(name, flush=True)
        figures["caches"][name] = f = run_cache(name, cache, args.draws)
        for asked in ASKED:
            a = f[f"asked_{100 * asked:g}_points"]
            print(f"  {100 * asked:g} point: saving max_prob {100 * a['max_prob']['mean_saving']:.2f}  with gate "
                  f"{100 * a['max_prob+gate']['mean_saving']:.2f}  gain {a['gain_points_mean']:+.2f} "
                  f"+- {a['gain_points_se'] or 0:.2f} points; violations {a['max_prob']['violation_share']:.2f} / "
                  f"{a['max_prob+gate']['violation_share']:.2f}", flush=True)
    gains = [c[f"asked_{100 * a:g}_points"]["gain_points_mean"] for c in figures["caches"].values() for a in ASKED]
    figures["mean_gain_points"] = float(np.mean(gains))
    figures["worst_gain_points"] = float(np.min(gains))
    path = save_results("gate", figures)
    print(f"mean gain {figures['mean_gain_points']:+.2f} points, worst {figures['worst_gain_points']:+.2f}; {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
