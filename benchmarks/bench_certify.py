"""Certified answers: validity and tightness of the drop bounds, Pareto Testing end to end, efficiency.

1. Validity at the boundary: with the true drop equal to the asked one (0.5 point), how often each bound
   certifies anyway, over --draws simulated calibration sets (default 1,000) at n = 3,000 / 10,000 / 50,000
   and discordance 3% / 8%, delta = 0.1; a valid bound stays <= delta within Monte-Carlo error.
2. Tightness: each bound's margin above the observed drop at delta = 0.1 (true drop 0.5 point), mean over
   --tight-draws draws per setting.
3. End to end: on caches A, B, C of bench_search.py, a small cache S (6,000 search samples) and the bundled
   demo cache, --resamples (default 200)
   seeded fit / calibration / holdout resamples. Synthetic caches: their search and holdout samples pooled,
   then cut at random into a search part of the original size (itself cut into fit and calibration by the
   default fraction) and a holdout; the demo cache: its search and calibration splits pooled and re-cut to
   their sizes, holdout = its own (the test images). Certified answers at 0.5 and 1 point (the CLI's
   defaults); a violation is a holdout drop above the asked drop.
4. Efficiency: on caches with >= 10,000 search samples, for the first --hindsight resamples, the holdout
   saving of the certified answer against what the dp front fitted on that resample's whole search part
   saves in hindsight at the same holdout drop; the uncertified answer's holdout drop for contrast.
5. Calibration fraction: the certified answers' mean holdout saving at fractions 0.3 / 0.5 / 0.7 over the
   first --fraction-resamples resamples of the synthetic caches (S: all --resamples of them).

Usage: python benchmarks/bench_certify.py [--quick]; figures go to benchmarks/results/certify.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import RESULTS, describe_machine, save_results  # noqa: E402
from benchmarks.bench_search import CACHES  # noqa: E402
from data_cache import format as fmt  # noqa: E402
from data_cache import open_cache
from data_cache.bundled import bundled_cache_path  # noqa: E402
from data_cache.cli_types import positive_int  # noqa: E402
from data_cache.memory import InMemoryCache  # noqa: E402
from data_cache.synthetic import make_synthetic_cache  # noqa: E402
from search import ExitProblem  # noqa: E402
from search.calibration import DEFAULT_FRACTION, Roles  # noqa: E402
from search.certify import BOUNDS, DEFAULT_BOUND, PairedLosses, get_bound, paired_losses  # noqa: E402
from search.engines.dp import DPEngine  # noqa: E402
from search.indicators import saving_at_drop  # noqa: E402
from search.pareto_testing import DEFAULT_DELTA, certify_drop  # noqa: E402
from search.queries import cheapest_within_drop  # noqa: E402

DELTA = 0.1
EPS = 0.005
SIZES = (3_000, 10_000, 50_000)
DISCORDANCES = (0.03, 0.08)
ASKED = (0.005, 0.01)
FRACTIONS = (0.3, 0.5, 0.7)
# a small cache (6,000 search samples, like the demo before it had a calibration split): the fraction matters most
SMALL = {"S": dict(n_samples=12_000, n_positions=8, n_head_types=2, seed=4)}


def _draw(rng, n: int, s: float, drop: float) -> PairedLosses:
    p_plus, p_minus = (s + drop) / 2, (s - drop) / 2
    return PairedLosses.from_values(rng.choice(np.array([1, -1, 0], dtype=np.int8), size=n,
                                               p=[p_plus, p_minus, 1 - s]))


def validity(draws: int, rng) -> dict:
    out = {}
    se = math.sqrt(DELTA * (1 - DELTA) / draws)
    for s in DISCORDANCES:
        for n in SIZES:
            hits = {name: 0 for name in BOUNDS}
            for _ in range(draws):
                losses = _draw(rng, n, s, EPS)
                for name, b in BOUNDS.items():
                    hits[name] += b.certifies(losses, EPS, DELTA)
            out[f"s={s:g} n={n}"] = {name: {"violation_rate": h / draws, "mc_se": se,
                                            "within_mc_error": h / draws <= DELTA + 2 * se}
                                     for name, h in hits.items()}
            print(f"validity s={s:.0%} n={n:>6}: " + "  ".join(f"{k} {v['violation_rate']:.3f}"
                                                               for k, v in out[f's={s:g} n={n}'].items())
                  + f"  (delta {DELTA}, MC s.e. {se:.3f})", flush=True)
    return out


def tightness(draws: int, rng) -> dict:
    out = {}
    for s in DISCORDANCES:
        for n in SIZES:
            margins = {name: [] for name in BOUNDS}
            for _ in range(draws):
                losses = _draw(rng, n, s, EPS)
                for name, b in BOUNDS.items():
                    margins[name].append(100 * (b.upper_bound(losses, DELTA) - losses.drop))
            out[f"s={s:g} n={n}"] = {name: {"mean_margin_points": float(np.mean(m)),
                                            "median_margin_points": float(np.median(m))}
                                     for name, m in margins.items()}
            print(f"margin   s={s:.0%} n={n:>6}: " + "  ".join(f"{k} {v['mean_margin_points']:.3f}"
                                                               for k, v in out[f's={s:g} n={n}'].items())
                  + " points", flush=True)
    return out


# -- end to end ---------------------------------------------------------------------------------

def _pooled(cache, splits: tuple[str, ...]) -> InMemoryCache:
    """One split ``pool`` holding the rows of ``splits`` in order."""
    arrays = {f: np.concatenate([np.asarray(cache._array(s, f)) for s in splits], axis=-1 if f != fmt.LABELS else 0)
              for f in fmt.SPLIT_FILES}
    n = sum(cache.n_samples(s) for s in splits)
    meta = dataclasses.replace(cache.meta, splits={"pool": n}, split_definitions={"pool": "+".join(splits)})
    return InMemoryCache(meta, {"pool": arrays})


class Resampler:
    """Seeded fit / calibration / holdout cuts of one cache (see the module docstring)."""

    def __init__(self, cache):
        self.has_calibration = "calibration" in cache.splits()
        if self.has_calibration:  # demo: train-part rows pooled, the test part stays the holdout
            self.pool = ExitProblem(_pooled(cache, ("search", "calibration")), "pool")
            self.fixed_holdout = ExitProblem(cache, "holdout", costs=self.pool.costs)
            self.n_search, self.n_cal = cache.n_samples("search"), cache.n_samples("calibration")
        else:
            self.pool = ExitProblem(_pooled(cache, ("search", "holdout")), "pool")
            self.fixed_holdout = None
            self.n_search, self.n_cal = cache.n_samples("search"), None

    def cut(self, seed: int, fraction: float) -> tuple[Roles, ExitProblem, ExitProblem]:
        """Roles, the whole search part (fit + calibration) and the holdout of resample ``seed``."""
        perm = np.random.default_rng([seed, 17]).permutation(self.pool.n_samples)
        if self.has_calibration:
            fit_idx, cal_idx = perm[:self.n_search], perm[self.n_search:self.n_search + self.n_cal]
            roles = Roles(self.pool.take(np.sort(fit_idx)), self.pool.take(cal_idx), "calibration", None, seed)
            return roles, self.pool.take(np.sort(perm[:self.n_search + self.n_cal])), self.fixed_holdout
        n_cal = int(round(self.n_search * fraction))
        cal_idx, fit_idx = perm[:n_cal], perm[n_cal:self.n_search]
        roles = Roles(self.pool.take(np.sort(fit_idx)), self.pool.take(cal_idx), "search", fraction, seed)
        return roles, self.pool.take(np.sort(perm[:self.n_search])), self.pool.take(np.sort(perm[self.n_search:]))


def _outcome(ans, holdout: ExitProblem) -> dict:
    ev = holdout.evaluate_one(ans.config)
    return {"certified": ans.certificate is not None, "holdout_drop": holdout.base.accuracy - ev.accuracy,
            "saving": 1.0 - ev.relative_cost}


def _bound_of(ans) -> float | None:
    """The chosen configuration's own bound on calibration (the tightest drop its evidence supports)."""
    if ans.certificate is None:
        return None
    cal = ans.roles.calibration
    right = cal.correct[cal.assign(ans.config), np.arange(cal.n_samples)]
    return get_bound(DEFAULT_BOUND).upper_bound(paired_losses(right, cal.correct[cal.final_exit]), DEFAULT_DELTA)


def end_to_end(name: str, cache, resamples: int, hindsight: int, fraction_resamples: int) -> dict:
    rs = Resampler(cache)
    eff = rs.n_search >= 10_000
    runs = {str(a): [] for a in ASKED}
    fractions = {f"{f:g}": {str(a): [] for a in ASKED} for f in FRACTIONS}
    table, t0 = [], time.perf_counter()
    for r in range(resamples):
        per_fraction = FRACTIONS if (r < fraction_resamples and not rs.has_calibration) else (DEFAULT_FRACTION,)
        for fraction in per_fraction:
            roles, search, holdout = rs.cut(r, fraction)
            fit_front = DPEngine().run(roles.fit)
            for asked in ASKED:
                ans = certify_drop(roles, asked, delta=DEFAULT_DELTA, bound=DEFAULT_BOUND, fit_front=fit_front)
                res = _outcome(ans, holdout)
                if fraction in FRACTIONS and not rs.has_calibration:
                    fractions[f"{fraction:g}"][str(asked)].append(res["saving"])
                if fraction != DEFAULT_FRACTION:
                    continue
                res["violated"] = res["holdout_drop"] > asked
                if eff and r < hindsight:
                    front = DPEngine().run(search)
                    Fh = holdout.evaluate(front.configs)
                    res["hindsight_saving"] = saving_at_drop(Fh, holdout.base.accuracy, max(res["holdout_drop"], 0.0))
                    loose = holdout.evaluate_one(
                        cheapest_within_drop(search, 100 * asked, front=front, n_bisect=0).config)
                    res["uncertified_holdout_drop"] = holdout.base.accuracy - loose.accuracy
                    res["uncertified_saving"] = 1.0 - loose.relative_cost
                    if r == 0:
                        table.append({"asked_points": 100 * asked, "bound_points": None if ans.certificate is None
                                      else 100 * _bound_of(ans), "holdout_drop_points": 100 * res["holdout_drop"],
                                      "saving": res["saving"], "hindsight_saving": res["hindsight_saving"]})
                runs[str(asked)].append(res)
        if r % 20 == 19:
            print(f"  {name}: {r + 1}/{resamples} resamples, {time.perf_counter() - t0:.0f} s", flush=True)
    summary = {}
    for asked, rows in runs.items():
        v = np.array([x["violated"] for x in rows])
        s = {"resamples": len(rows), "violation_rate": float(v.mean()),
             "mc_se": float(math.sqrt(DELTA * (1 - DELTA) / len(rows))),
             "certified_share": float(np.mean([x["certified"] for x in rows])),
             "mean_holdout_drop_points": float(100 * np.mean([x["holdout_drop"] for x in rows])),
             "mean_saving": float(np.mean([x["saving"] for x in rows]))}
        hs = [x for x in rows if "hindsight_saving" in x]
        if hs:
            ratios = [x["saving"] / x["hindsight_saving"] for x in hs if x["hindsight_saving"]]
            s.update({"hindsight_resamples": len(hs), "mean_hindsight_saving": float(np.mean([x["hindsight_saving"]
                                                                                            for x in hs])),
                      "saving_over_hindsight_mean": float(np.mean(ratios)) if ratios else None,
                      "saving_over_hindsight_min": float(np.min(ratios)) if ratios else None,
                      "uncertified_violation_rate": float(np.mean([x["uncertified_holdout_drop"] > float(asked)
                                                                   for x in hs])),
                      "uncertified_mean_holdout_drop_points": float(100 * np.mean([x["uncertified_holdout_drop"]
                                                                                   for x in hs]))})
        summary[asked] = s
    out = {"n_search": rs.n_search, "n_calibration_split": rs.n_cal, "summary": summary, "table_resample_0": table,
           "seconds": time.perf_counter() - t0, "machine": describe_machine()}
    if not rs.has_calibration and fraction_resamples:
        out["fraction_mean_saving"] = {f: {a: float(np.mean(v)) for a, v in d.items()} for f, d in fractions.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: few draws and resamples")
    ap.add_argument("--draws", type=positive_int, default=1000)
    ap.add_argument("--tight-draws", type=positive_int, default=200)
    ap.add_argument("--resamples", type=positive_int, default=200)
    ap.add_argument("--hindsight", type=positive_int, default=20)
    ap.add_argument("--fraction-resamples", type=positive_int, default=40)
    ap.add_argument("--caches", default="A,B,C,S,demo", help="which caches to run end to end ('' for none)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other parts of an existing results file (run parts separately)")
    args = ap.parse_args()
    if args.quick:
        args.draws, args.tight_draws = min(args.draws, 50), min(args.tight_draws, 5)
        args.resamples, args.hindsight = 3, min(args.hindsight, 2)
        args.fraction_resamples = min(args.fraction_resamples, 2)
    rng = np.random.default_rng(0)
    name = "certify_quick" if args.quick else "certify"
    figures = json.loads((RESULTS / f"{name}.json").read_text()) if args.merge and (RESULTS / f"{name}.json").exists() \
        else {}
    figures.pop("machine", None)
    figures.update({"delta": DELTA, "asked_drop_points": 100 * EPS, "default_bound": DEFAULT_BOUND,
                    "default_fraction": DEFAULT_FRACTION})
    if args.draws:
        figures["validity_at_boundary"] = {"draws": args.draws, "machine": describe_machine(),
                                           **validity(args.draws, rng)}
    if args.tight_draws:
        figures["tightness"] = {"draws": args.tight_draws, **tightness(args.tight_draws, rng)}
    caches = {**{k.split(":")[0]: spec for k, spec in CACHES.items()}, **SMALL}
    e2e = figures.setdefault("end_to_end", {})
    for cname in filter(None, args.caches.split(",")):
        cache = open_cache(bundled_cache_path()) if cname == "demo" else make_synthetic_cache(**caches[cname])
        print(f"end to end on {cname}", flush=True)
        e2e[cname] = end_to_end(cname, cache, args.resamples, args.hindsight,
                                args.resamples if cname in SMALL else args.fraction_resamples)
        for asked, s in e2e[cname]["summary"].items():
            extra = ("" if "saving_over_hindsight_mean" not in s else
                     f"; saving / hindsight mean {s['saving_over_hindsight_mean']:.3f} (min "
                     f"{s['saving_over_hindsight_min']:.3f}); uncertified violates "
                     f"{s['uncertified_violation_rate']:.2f}")
            print(f"  asked {100 * float(asked):.1f} pt: violations {s['violation_rate']:.3f} of {s['resamples']} "
                  f"(MC s.e. {s['mc_se']:.3f}), certified {s['certified_share']:.2f}, "
                  f"mean saving {s['mean_saving']:.3f}" + extra, flush=True)
        for row in e2e[cname]["table_resample_0"]:
            print("  resample 0: " + ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} -" for k, v in row.items()))
        if "fraction_mean_saving" in e2e[cname]:
            print("  mean saving by calibration fraction: " + "; ".join(
                f"{f}: " + ", ".join(f"{100 * float(a):.1f} pt {v:.4f}" for a, v in d.items())
                for f, d in e2e[cname]["fraction_mean_saving"].items()), flush=True)
    print("\nsaved", save_results(name, figures))


if __name__ == "__main__":
    main()
