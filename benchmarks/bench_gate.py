"""The learned gates (``--rules max_prob,gate``, ``--rules max_prob,partner_gate``) against ``max_prob`` alone:
certified saving on the same draws.

The population protocol of ``bench_rules.py``: a cache's rows (every split) are the population; each draw takes
a search split of the cache's usual size from it (without replacement), cuts it into fit and calibration parts,
fits each gate at every exit on the fit part alone (``ExitProblem(fit_rows=...)``), searches the fit part with dp
(``max_prob`` alone, then ``max_prob`` and one gate chosen per exit, for each gate of ``--gates``, on the same
draw), certifies the cheapest
configuration within 0.5 and 1 point (Pareto Testing, the default bound and delta) and measures the answer on
the whole population (the gate scored there with the params fitted on the draw's fit part). A draw whose fit part
cannot fit a gate at some exit (one class only there: the search refuses it in one line) counts as ``max_prob``
alone for that gate, what its user would run instead; ``unfitted_share`` says how often.

Caches: the bundled demo, further real caches (``--real``) and the small synthetic cache S of ``bench_rules.py``.

Usage: python benchmarks/bench_gate.py [--draws N] [--gates gate,partner_gate] [--real CACHE,...] [--out NAME];
figures go to benchmarks/results/gate.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from benchmarks.bench_rules import ASKED, SMALL, _population, _sizes, real_label, summarise  # noqa: E402
from data_cache import open_cache  # noqa: E402
from data_cache.bundled import bundled_cache_path  # noqa: E402
from data_cache.cli_types import positive_int  # noqa: E402
from data_cache.synthetic import make_synthetic_cache  # noqa: E402
from search import ExitProblem, SearchError  # noqa: E402
from search.calibration import DEFAULT_FRACTION, Roles  # noqa: E402
from search.engines.dp import DPEngine  # noqa: E402
from search.pareto_testing import DEFAULT_DELTA, certify_drop  # noqa: E402

GATES = ("gate", "partner_gate")


def _draw(population, single: ExitProblem, d: int, n_fit: int, n_cal: int, gates: tuple[str, ...]) -> dict:
    """One draw: every setting certified at every asked drop, measured on the population."""
    perm = np.random.default_rng([d, 23]).permutation(single.n_samples)[: n_fit + n_cal]
    fit_idx, cal_idx = np.sort(perm[:n_fit]), perm[n_fit:]
    problems, unfitted = {"max_prob": single}, set()
    for g in gates:
        try:
            problems[f"max_prob+{g}"] = ExitProblem(population, "pool", rules=("max_prob", g), fit_rows=fit_idx)
        except SearchError:  # the search refuses it (one class at an exit): the user runs max_prob alone
            problems[f"max_prob+{g}"] = single
            unfitted.add(f"max_prob+{g}")
    out = {}
    for label, problem in problems.items():
        roles = Roles(problem.take(fit_idx), problem.take(cal_idx), "search", DEFAULT_FRACTION, d)
        front = DPEngine().run(roles.fit)
        for asked in ASKED:
            ans = certify_drop(roles, asked, delta=DEFAULT_DELTA, fit_front=front)
            ev = problem.evaluate_one(ans.config)
            out[(label, asked)] = {
                "certified": ans.certificate is not None,
                "saving": 1.0 - ev.relative_cost,
                "drop": single.base.accuracy - ev.accuracy,
                "uses_gate": any(r in GATES for r in ans.config.rule_names),
                "unfitted": label in unfitted,
            }
    return out


def run_cache(name: str, cache, draws: int, gates: tuple[str, ...]) -> dict:
    population = _population(cache)
    single = ExitProblem(population, "pool")
    n_fit, n_cal = _sizes(cache)
    rows: dict = {}
    t0 = time.perf_counter()
    for d in range(draws):
        for key, row in _draw(population, single, d, n_fit, n_cal, gates).items():
            rows.setdefault(key, []).append(row)
        print(f"  {name}: draw {d + 1}/{draws}, {time.perf_counter() - t0:.0f} s", flush=True)
    out = {"population": single.n_samples, "fit": n_fit, "calibration": n_cal, "draws": draws,
           "seconds": time.perf_counter() - t0}
    for asked in ASKED:
        for g in gates:
            label = f"max_prob+{g}"
            by = {lab: rows[(lab, asked)] for lab in ("max_prob", label)}
            out.setdefault(f"asked_{100 * asked:g}_points", {})[g] = summary = summarise(
                by, "max_prob", label, asked, ("uses_gate", "answer_uses_gate_share"))
            summary[label]["unfitted_share"] = float(np.mean([r["unfitted"] for r in by[label]]))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=positive_int, default=10, help="draws per cache")
    parser.add_argument("--gates", default=",".join(GATES), help="comma-separated learned rules to compare")
    parser.add_argument("--real", default="", help="comma-separated folders of further real caches")
    parser.add_argument("--out", default="gate", help="results name")
    args = parser.parse_args(argv)
    gates = tuple(g for g in args.gates.split(",") if g)
    unknown = sorted(set(gates) - set(GATES))
    if unknown:
        parser.error(f"--gates: unknown learned rule(s) {unknown}; choose from {list(GATES)}")
    caches = {}
    demo = bundled_cache_path()
    if demo is not None:
        caches["demo (bundled Fashion-MNIST)"] = open_cache(demo)
    for folder in filter(None, args.real.split(",")):
        caches[real_label(folder)] = open_cache(folder)
    for name, spec in SMALL.items():
        caches[name] = make_synthetic_cache(**spec)
    figures: dict = {"delta": DEFAULT_DELTA, "asked_points": [100 * a for a in ASKED], "gates": list(gates),
                     "target": "harmless (exit right or final wrong)", "caches": {}}
    for name, cache in caches.items():
        print(name, flush=True)
        figures["caches"][name] = f = run_cache(name, cache, args.draws, gates)
        for asked in ASKED:
            for g in gates:
                a = f[f"asked_{100 * asked:g}_points"][g]
                mine = a[f"max_prob+{g}"]
                print(f"  {100 * asked:g} point, {g}: saving max_prob {100 * a['max_prob']['mean_saving']:.2f}  "
                      f"with {g} {100 * mine['mean_saving']:.2f}  gain {a['gain_points_mean']:+.2f} "
                      f"+- {a['gain_points_se'] or 0:.2f} points; violations {a['max_prob']['violation_share']:.2f}"
                      f" / {mine['violation_share']:.2f}; answers using it {mine['answer_uses_gate_share']:.2f}; "
                      f"not fitted {mine['unfitted_share']:.2f}", flush=True)
    for g in gates:
        gains = [c[f"asked_{100 * a:g}_points"][g]["gain_points_mean"] for c in figures["caches"].values()
                 for a in ASKED]
        figures[g] = {"mean_gain_points": float(np.mean(gains)), "worst_gain_points": float(np.min(gains))}
        print(f"{g}: mean gain {np.mean(gains):+.2f} points, worst {np.min(gains):+.2f}")
    print(save_results(args.out, figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
