"""Searching on predicted time on the bundled demo: the engines' hypervolume at B = 64, and the value of the time
objective for certified answers.

Steps, as a user runs them: the bundled Fashion-MNIST cache is copied to a temporary folder and profiled there
(``python -m exits.profile --name cpu-b64 --device cpu --threads 1 --batch-size 64 --runtime eager``); then

1. on ``--objective time`` (exact predicted time per sample at B = 64, relative to the base model): the
   hypervolume of dp's front (searched on its additive surrogate, re-scored exactly) against nsga2 and optuna
   seeded with it and optimising the exact objective (``--evaluations`` each);
2. the certified answers at 0.5 and 1 point of drop chosen on time and chosen on MACs (``search.search``, dp),
   each with its predicted time per sample and speed-up on the profiled target.

The machine and its load average (before and after the profile) are saved with the figures.

Usage: python benchmarks/bench_time_search.py [--evaluations 3000] [--rounds 5]; figures go to
benchmarks/results/time_search.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import search  # noqa: E402
from benchmarks._machine import save_results  # noqa: E402
from data_cache import open_cache  # noqa: E402
from data_cache.bundled import bundled_cache_path  # noqa: E402
from search import Budget, ExitProblem, create_engine  # noqa: E402
from search.costs import cost_table  # noqa: E402
from search.exact import SplitEvaluator  # noqa: E402
from search.indicators import HV  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLE = "cpu-b64"


def profile(cache_dir: Path, rounds: int) -> float:
    """Run the profile as a user does; its wall seconds."""
    cmd = [sys.executable, "-m", "exits.profile",
           "--checkpoint", str(ROOT / "data_cache/bundled/fashion_mnist.checkpoint.pt"),
           "--cache", str(cache_dir), "--name", TABLE, "--device", "cpu", "--threads", "1", "--batch-size", "64",
           "--runtime", "eager", "--rounds", str(rounds), "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - t0


def engines(cache, evaluations: int) -> dict:
    """Hypervolume in exact predicted time (search split) of dp re-scored and of the seeded population engines."""
    problem = ExitProblem(cache, "search", costs=cost_table(cache, "time", table=TABLE))
    hv, out = HV(), {}
    runs = [("dp", {}), ("nsga2", {"seed_with_dp": True}), ("optuna", {"seed_with_dp": True})]
    for name, kw in runs:
        t0 = time.perf_counter()
        budget = None if name == "dp" else Budget(max_evals=evaluations)
        front = create_engine(name, **kw).run(problem, budget=budget, seed=0)
        out[name + (" seeded" if kw else " (surrogate, re-scored)")] = {
            "hv_time": hv(front.F), "points": len(front), "evaluations": front.n_evals,
            "seconds": time.perf_counter() - t0}
    return out


def answers(cache) -> dict:
    """Certified answers at 0.5 and 1 point chosen on time and on MACs, each with its relative MACs and predicted
    time on holdout."""
    timed, macs = (SplitEvaluator(cache, "holdout", costs=cost_table(cache, o, table=t), score="max_prob", objective=o)
                   for o, t in (("time", TABLE), ("macs", None)))
    out = {}
    for drop in (0.5, 1.0):
        for objective in ("time", "macs"):
            kw = {"cost_table": TABLE} if objective == "time" else {}
            res = search.search(cache, methods="dp", objective=objective, max_drop=drop, **kw)
            answer = res.answers[0]
            ev = timed.evaluate_one(answer.config)
            out[f"{drop:g}pt, chosen on {objective}"] = {
                "certified": answer.certificate is not None, "holdout_accuracy": answer.on_holdout.accuracy,
                "relative_macs": macs.evaluate_one(answer.config).relative_cost,
                "predicted_ms_per_sample": ev.cost, "predicted_relative_time": ev.relative_cost,
                "predicted_speedup": 1 / ev.relative_cost, "exits": len(answer.config.exits)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluations", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "fashion_mnist"
        shutil.copytree(bundled_cache_path(), copy)
        load_before = os.getloadavg()
        seconds = profile(copy, args.rounds)
        load_after = os.getloadavg()
        cache = open_cache(copy)
        figures = {"profile": {"table": TABLE, "seconds": seconds, "rounds": args.rounds,
                               "loadavg_before": load_before, "loadavg_after": load_after},
                   "engines_b64": engines(cache, args.evaluations), "answers_b64": answers(cache)}
    figures["loadavg_at_end"] = os.getloadavg()
    print(save_results("time_search", figures).read_text())


if __name__ == "__main__":
    main()
