"""Would a weighted ensemble of earlier heads' log-probabilities decide exits better? Measured before building it.

Issue 19 lists, among the exit rules to try, "a weighted ensemble of this and earlier heads' log-probabilities"
(as in ZTW). The tool's ``ensemble`` rule averages with one partner's top-2 only, which every cache can serve; the
full ensemble needs every class's probability at every exit (a cache dumped with ``--k`` = the number of classes, or
``--logits``). This script asks, on such a cache, whether building it would pay, under the population protocol of
``bench_rules.py`` (same draws, sizes and certified query):

- ``max_prob``: every exit decides on its own top-1 probability (the default);
- ``ens-w`` (w = 1, 0.5, 0.3): exit e at position p averages the log-probabilities of the exits of its head type
  at positions q <= p with weights w^(p - q) (normalised), and answers the ensemble's top-1 class with the
  ensemble's (renormalised) probability as its score; the final exit is left as it is.

The earlier heads an ensemble reads are **not charged** (a deciding exit would have to run every one of them): the
ensemble's figures are an upper bound on what the rule could deliver. Prints and saves the certified saving of each
variant against ``max_prob`` on the same draws.

Usage: python benchmarks/bench_ensemble.py [--cache DIR] [--draws 100]; without ``--cache`` the bundled demo's
checkpoint is dumped with every class kept (``python -m data_cache.dump ... --k 10``, about 15 s on 2 cores) into a
temporary folder. Figures go to benchmarks/results/ensemble.json (machine and load recorded).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from benchmarks.bench_rules import ASKED, _population, _sizes, summarise  # noqa: E402
from data_cache import format as fmt  # noqa: E402
from data_cache import open_cache  # noqa: E402
from data_cache.cli_types import positive_int  # noqa: E402
from search import ExitProblem  # noqa: E402
from search.calibration import DEFAULT_FRACTION, Roles  # noqa: E402
from search.engines.dp import DPEngine  # noqa: E402
from search.pareto_testing import DEFAULT_DELTA, certify_drop  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DECAYS = (1.0, 0.5, 0.3)


def _dump_demo(out: Path) -> Path:
    """The bundled demo's checkpoint dumped with every class's probability kept."""
    cmd = [sys.executable, "-m", "data_cache.dump", "--model", "vit_tiny_patch16_224", "--checkpoint",
           str(ROOT / "data_cache/bundled/fashion_mnist.checkpoint.pt"), "--dataset", "fashion_mnist", "--k", "10",
           "--device", "cpu", "--quiet", "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def _log_probs(pool) -> np.ndarray:
    """Every exit's log-probabilities ``(exits, samples, classes)`` from a cache that keeps every class."""
    ids = np.asarray(pool._array("pool", fmt.TOPK_IDS)).astype(np.int64)
    probs = np.asarray(pool._array("pool", fmt.TOPK_PROBS)).astype(np.float64)
    n_exits, k, n = ids.shape
    if k != pool.n_classes:
        raise SystemExit(f"error: the cache keeps the top {k} of {pool.n_classes} classes; dump it with --k "
                         f"{pool.n_classes}")
    full = np.zeros((n_exits, n, k))
    np.put_along_axis(full, np.moveaxis(ids, 1, 2), np.moveaxis(probs, 1, 2), axis=2)
    return np.log(np.clip(full, 1e-12, None))


def ensemble_problem(pool: ExitProblem, log_p: np.ndarray, labels: np.ndarray, decay: float) -> ExitProblem:
    """``pool`` with every early exit answering the decayed ensemble of its head type's exits up to its position."""
    out = pool.take(np.arange(pool.n_samples))
    exits = pool.cache.exits
    for e, x in enumerate(exits):
        if x.final:
            continue
        chain = [q for q, y in enumerate(exits) if not y.final and y.head == x.head and y.position <= x.position]
        w = np.array([decay ** (x.position - exits[q].position) for q in chain])
        mixed = np.tensordot(w / w.sum(), log_p[chain], axes=1)
        p = np.exp(mixed - mixed.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out.scores[e] = p.max(axis=1).astype(out.scores.dtype)
        out.correct[e] = p.argmax(axis=1) == labels
    return out


def run(cache, draws: int) -> dict:
    pool_cache = _population(cache)
    pool = ExitProblem(pool_cache, "pool")
    log_p, labels = _log_probs(pool_cache), np.asarray(pool_cache._array("pool", fmt.LABELS))
    variants = {"max_prob": pool} | {f"ens-{w:g}": ensemble_problem(pool, log_p, labels, w) for w in DECAYS}
    n_fit, n_cal = _sizes(cache)
    base = pool.base.accuracy
    rows = {str(a): {v: [] for v in variants} for a in ASKED}
    t0 = time.perf_counter()
    for d in range(draws):
        perm = np.random.default_rng([d, 23]).permutation(pool.n_samples)[:n_fit + n_cal]
        fit_idx, cal_idx = np.sort(perm[:n_fit]), perm[n_fit:]
        for label, problem in variants.items():
            roles = Roles(problem.take(fit_idx), problem.take(cal_idx), "search", DEFAULT_FRACTION, d)
            front = DPEngine().run(roles.fit)
            for asked in ASKED:
                ans = certify_drop(roles, asked, delta=DEFAULT_DELTA, fit_front=front)
                ev = problem.evaluate_one(ans.config)
                rows[str(asked)][label].append({"certified": ans.certificate is not None,
                                                "saving": 1.0 - ev.relative_cost, "drop": base - ev.accuracy,
                                                "exits": len(ans.config.exits)})
        if d % 10 == 9:
            print(f"  draw {d + 1}/{draws}, {time.perf_counter() - t0:.0f} s", flush=True)
    out = {"population": pool.n_samples, "fit": n_fit, "calibration": n_cal, "draws": draws,
           "seconds": time.perf_counter() - t0, "earlier_heads_charged": False}
    for asked, by in rows.items():
        out[f"asked_{100 * float(asked):g}_points"] = {
            v: summarise({"max_prob": by["max_prob"], v: by[v]}, "max_prob", v, float(asked), ("exits", "mean_exits"))
            for v in variants if v != "max_prob"}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=None, help="a cache keeping every class (default: dump the demo's)")
    parser.add_argument("--draws", type=positive_int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.cache) if args.cache else _dump_demo(Path(tmp) / "demo_all_classes")
        figures = {"cache": str(args.cache or "bundled demo, dumped with --k 10"), "delta": DEFAULT_DELTA,
                   "decays": list(DECAYS), **run(open_cache(folder), args.draws)}
    for asked in ASKED:
        for v, f in figures[f"asked_{100 * asked:g}_points"].items():
            print(f"{100 * asked:g} point, {v}: saving {100 * f[v]['mean_saving']:.2f} against max_prob "
                  f"{100 * f['max_prob']['mean_saving']:.2f}, gain {f['gain_points_mean']:+.2f} +- "
                  f"{f['gain_points_se']:.2f} points; violations {f[v]['violation_share']:.2f}", flush=True)
    print(save_results("ensemble", figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
