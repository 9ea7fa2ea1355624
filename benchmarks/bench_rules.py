"""Exit rules chosen per exit (``--rules auto``) against ``max_prob`` alone: certified saving on the same draws.

Population protocol: a cache's rows (every split) are the population; each draw takes a search split of the
cache's usual size from it at random (without replacement, so fit and calibration never share a row), cuts it into
fit and calibration parts (the default fraction; for the demo, the sizes of its own search and calibration
splits), searches the fit part with dp (``max_prob`` alone, then the rules ``auto`` finds servable, on the same
draw), certifies the cheapest configuration within 0.5 and 1 point (Pareto Testing, the default bound and delta)
and measures the answer on the whole population: its saving (1 - relative cost), its drop against the base, and
whether that drop breaks the asked one.

Caches: A, B, C of ``bench_search.py``, the small cache S of ``bench_certify.py`` and the bundled demo. Neither
the synthetic caches nor the demo store logits, so ``auto`` there is ``max_prob``, ``margin`` and the two rules
that read the partner exit, ``agree`` and ``ensemble`` (their partner's head paid where they decide).

``--add partner_gate`` adds learned rules to ``auto``'s, fitted on each draw's fit part only (a draw where the
search refuses one, one class at an exit, runs ``auto`` without it, as its user would).

Usage: python benchmarks/bench_rules.py [--draws N] [--big-draws N] [--quick] [--real CACHE,...] [--real-only]
[--add RULES] [--out NAME]; figures go to benchmarks/results/rules.json (machine and load recorded).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from benchmarks.bench_search import CACHES  # noqa: E402
from contract import list_rules, rule_class  # noqa: E402
from data_cache import format as fmt  # noqa: E402
from data_cache import open_cache
from data_cache.bundled import bundled_cache_path  # noqa: E402
from data_cache.cli_types import positive_int  # noqa: E402
from data_cache.memory import InMemoryCache  # noqa: E402
from data_cache.synthetic import make_synthetic_cache  # noqa: E402
from search import ExitProblem, SearchError  # noqa: E402
from search.calibration import DEFAULT_FRACTION, Roles  # noqa: E402
from search.engines.dp import DPEngine  # noqa: E402
from search.pareto_testing import DEFAULT_DELTA, certify_drop  # noqa: E402
from search.scores import resolve_rules  # noqa: E402

ASKED = (0.005, 0.01)
SMALL = {"S: 12k x 8 pos x 2 heads": dict(n_samples=12_000, n_positions=8, n_head_types=2, seed=4)}


def _population(cache) -> InMemoryCache:
    """One split ``pool`` holding the rows of every split of ``cache`` in order."""
    splits = tuple(cache.splits())
    arrays = {f: np.concatenate([np.asarray(cache._array(s, f)) for s in splits], axis=-1 if f != fmt.LABELS else 0)
              for f in fmt.SPLIT_FILES if f != fmt.LOGITS}
    n = sum(cache.n_samples(s) for s in splits)
    meta = dataclasses.replace(cache.meta, splits={"pool": n}, split_definitions={"pool": "+".join(splits)})
    return InMemoryCache(meta, {"pool": arrays})


def real_label(folder: str) -> str:
    """A real cache's name in the results: its folder, model and dataset (from its provenance)."""
    made = open_cache(folder).manifest.get("provenance", {})
    model, data = made.get("model", {}).get("name", "?"), made.get("dataset", {}).get("name", "?")
    return f"{Path(folder).name} ({model} on {data})"


def _sizes(cache) -> tuple[int, int]:
    """(fit, calibration) sizes of a search of this cache: its calibration split, or the default cut."""
    n = cache.n_samples("search")
    if "calibration" in cache.splits():
        return n, cache.n_samples("calibration")
    n_cal = int(round(n * DEFAULT_FRACTION))
    return n - n_cal, n_cal


def run_cache(name: str, cache, draws: int, add: tuple[str, ...] = ()) -> dict:
    population = _population(cache)
    rules = resolve_rules("auto", "max_prob", cache) + add
    pool = ExitProblem(population, "pool", rules=rules[: len(rules) - len(add)])
    single = ExitProblem.__new__(ExitProblem)
    single.__dict__.update(pool.__dict__)
    single.rules, single.rule_scores = ("max_prob",), {"max_prob": pool.scores}
    n_fit, n_cal = _sizes(cache)
    base = pool.base.accuracy
    rows = {str(a): {"max_prob": [], "auto": []} for a in ASKED}
    t0, unfitted = time.perf_counter(), 0
    for d in range(draws):
        perm = np.random.default_rng([d, 23]).permutation(pool.n_samples)[:n_fit + n_cal]
        fit_idx, cal_idx = np.sort(perm[:n_fit]), perm[n_fit:]
        # learned rules (``add``) are fitted on this draw's fit part only; where the search refuses one (one
        # class at an exit), its user runs auto without it
        auto = pool
        if add:
            try:
                auto = ExitProblem(population, "pool", rules=rules, fit_rows=fit_idx)
            except SearchError:
                unfitted += 1
        for label, problem in (("max_prob", single), ("auto", auto)):
            roles = Roles(problem.take(fit_idx), problem.take(cal_idx), "search", DEFAULT_FRACTION, d)
            front = DPEngine().run(roles.fit)
            for asked in ASKED:
                ans = certify_drop(roles, asked, delta=DEFAULT_DELTA, fit_front=front)
                ev = problem.evaluate_one(ans.config)
                rows[str(asked)][label].append({
                    "certified": ans.certificate is not None, "saving": 1.0 - ev.relative_cost,
                    "drop": base - ev.accuracy, "mixed": len(set(ans.config.rule_names)) > 1,
                    "rules": sorted(set(ans.config.rule_names))})
        print(f"  {name}: draw {d + 1}/{draws}, {time.perf_counter() - t0:.0f} s", flush=True)
    out = {"population": pool.n_samples, "fit": n_fit, "calibration": n_cal, "rules_auto": list(rules),
           "draws": draws, "seconds": time.perf_counter() - t0, "draws_added_rules_unfitted": unfitted}
    for asked, by in rows.items():
        out[f"asked_{100 * float(asked):g}_points"] = summarise(by, "max_prob", "auto", float(asked),
                                                                 ("mixed", "mixed_rules_share"))
    return out


def summarise(by: dict[str, list[dict]], reference: str, other: str, asked: float,
              flag: tuple[str, str]) -> dict:
    """Per label: mean saving, violation, nothing-certified and ``flag`` (row key, output key) shares of its
    draws; and ``other`` minus ``reference`` in points of saving, paired over the draws (mean, standard error)."""
    diff = 100 * (np.array([r["saving"] for r in by[other]]) - [r["saving"] for r in by[reference]])
    n = len(diff)
    return {label: {"mean_saving": float(np.mean([r["saving"] for r in r_])),
                    "violation_share": float(np.mean([r["drop"] > asked for r in r_])),
                    "nothing_certified_share": float(np.mean([not r["certified"] for r in r_])),
                    flag[1]: float(np.mean([r[flag[0]] for r in r_]))}
            for label, r_ in by.items()} | {
        "gain_points_mean": float(diff.mean()),
        "gain_points_se": float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=positive_int, default=20, help="draws per small cache (S, demo)")
    parser.add_argument("--big-draws", type=positive_int, default=5, help="draws per large cache (A, B, C)")
    parser.add_argument("--quick", action="store_true", help="2 draws of S and the demo only (a smoke run)")
    parser.add_argument("--real", default="", help="comma-separated folders of further real caches (made with "
                        "exits.train and data_cache.dump), run with --draws each")
    parser.add_argument("--real-only", action="store_true", help="the demo and --real caches, no synthetic ones")
    parser.add_argument("--add", default="", help="comma-separated learned rules (gate, partner_gate) added to "
                        "auto's, fitted on each draw's fit part")
    parser.add_argument("--out", default=None, help="results name (default rules, or rules_quick)")
    args = parser.parse_args(argv)
    caches = {}
    demo = bundled_cache_path()
    if demo is not None:
        caches["demo (bundled Fashion-MNIST)"] = (open_cache(demo), 2 if args.quick else args.draws)
    for folder in filter(None, args.real.split(",")):
        caches[real_label(folder)] = (open_cache(folder), args.draws)
    if not args.real_only:
        for name, spec in SMALL.items():
            caches[name] = (make_synthetic_cache(**spec), 2 if args.quick else args.draws)
    if not args.quick and not args.real_only:
        for name, spec in CACHES.items():
            caches[name] = (make_synthetic_cache(**spec), args.big_draws)
    add = tuple(r for r in args.add.split(",") if r)
    learned = [n for n in list_rules() if rule_class(n).learned]
    if set(add) - set(learned):
        parser.error(f"--add: {sorted(set(add) - set(learned))} are not learned rules; choose from {learned}")
    figures = {"delta": DEFAULT_DELTA, "asked_points": [100 * a for a in ASKED], "added": list(add), "caches": {}}
    for name, (cache, draws) in caches.items():
        print(name, flush=True)
        figures["caches"][name] = run_cache(name, cache, draws, add)
        for asked in ASKED:
            f = figures["caches"][name][f"asked_{100 * asked:g}_points"]
            print(f"  {100 * asked:g} point: saving max_prob {100 * f['max_prob']['mean_saving']:.2f}  auto "
                  f"{100 * f['auto']['mean_saving']:.2f}  gain {f['gain_points_mean']:+.2f} points; violations "
                  f"{f['max_prob']['violation_share']:.2f} / {f['auto']['violation_share']:.2f}", flush=True)
    gains = [c[f"asked_{100 * a:g}_points"]["gain_points_mean"] for c in figures["caches"].values() for a in ASKED]
    figures["mean_gain_points"] = float(np.mean(gains))
    figures["worst_gain_points"] = float(np.min(gains))
    path = save_results(args.out or ("rules_quick" if args.quick else "rules"), figures)
    print(f"mean gain {figures['mean_gain_points']:+.2f} points, worst {figures['worst_gain_points']:+.2f}; {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
