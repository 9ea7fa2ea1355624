"""Population engines next to the exact dp, on the same problem and evaluator.

1. Throughput of ``ExitProblem.evaluate_arrays`` on whole populations at 50,000 search samples x
   12 positions x 2 head types: random populations, NSGA-II's own populations, and a worst case
   (every position enabled, thresholds so high that almost nobody leaves early).
2. Front quality on the 12-position benchmark cache (cache A of bench_search.py: 50k samples,
   25k in the search split): dp, nsga2 (20,000 evaluations, 3 seeds), optuna with its NSGA-II sampler
   (10,000; 20,000 with --full) and with TPE (2,000; 5,000 with --full): optuna's samplers scan every
   earlier trial on each ask, so their runs grow with the square of the trials (docs/engines.md).
   All in this process; dp's front is taken unthinned (max_configs=None) as the reference. Hypervolume
   (reference point (1, 1)) on search and holdout, IGD+ against the union of
   every front, evaluations, wall time; hypervolume against evaluations in engines.png.
3. Worker processes: one SQLite study (and a journal file) filled by 1 and by 2 workers; every trial
   of both must land in the study; the speed ratio is reported.

Usage: python benchmarks/bench_engines.py [--quick | --full]; figures go to benchmarks/results/engines.json/.png.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import RESULTS, save_results  # noqa: E402
from data_cache.synthetic import make_synthetic_cache, write_synthetic_cache  # noqa: E402
from search import Budget, ExitProblem, create_engine  # noqa: E402
from search.encoding import MixedEncoding  # noqa: E402
from search.front import non_dominated  # noqa: E402
from search.indicators import HV, IGDPlus  # noqa: E402
from search.storage import get_storage  # noqa: E402

CACHE_A = dict(n_samples=50_000, n_positions=12, n_head_types=2, seed=1)


def _versions() -> dict:
    import optuna
    import pymoo
    import scipy
    import sqlalchemy
    return {"pymoo": pymoo.__version__, "optuna": optuna.__version__, "scipy": scipy.__version__,
            "sqlalchemy": sqlalchemy.__version__}


def throughput(pop: int, batches: int) -> dict:
    """configs/s of evaluate_arrays on populations of ``pop`` at 50,000 search samples."""
    problem = ExitProblem(make_synthetic_cache(100_000, 12, n_head_types=2, seed=0))
    enc = MixedEncoding(problem, "quantile")
    rng = np.random.default_rng(0)
    J = problem.n_positions

    def rate(make) -> dict:
        """Wall-clock and CPU-time rates (the CPU rate is what a busy shared machine cannot distort)."""
        rows = [make() for _ in range(batches)]
        decoded = [enc.decode(H, X) for H, X in rows]
        t0, c0 = time.perf_counter(), time.process_time()
        for choice, thr in decoded:
            problem.evaluate_arrays(choice, thr)
        n = pop * batches
        return {"configs_per_s": n / (time.perf_counter() - t0), "configs_per_cpu_s": n / (time.process_time() - c0)}

    out = {"n_samples_search": problem.n_samples, "n_positions": J, "head_types": 2, "population": pop,
           "random": rate(lambda: (rng.integers(0, 3, (pop, J)), rng.uniform(0, 1, (pop, J)))),
           "worst_case_all_enabled_nobody_leaves": rate(
               lambda: (rng.integers(1, 3, (pop, J)), rng.uniform(0.995, 1, (pop, J))))}
    # NSGA-II's own populations: time spent inside the evaluator during a run
    spent = np.zeros(2)
    evaluate = problem.evaluate_arrays

    def timed(choice, thr):
        t0, c0 = time.perf_counter(), time.process_time()
        F = evaluate(choice, thr)
        spent[:] += (time.perf_counter() - t0, time.process_time() - c0)
        return F

    problem.evaluate_arrays = timed
    front = create_engine("nsga2", pop_size=pop).run(problem, budget=Budget(max_evals=pop * 30), seed=0)
    out["nsga2_populations"] = {"configs_per_s": front.n_evals / spent[0],
                                "configs_per_cpu_s": front.n_evals / spent[1]}
    out["nsga2_end_to_end_configs_per_s"] = front.n_evals / front.exec_time
    return out


def quality(evals: int, optuna_nsga2_evals: int, tpe_evals: int, seeds: list[int]) -> tuple[dict, dict]:
    cache = make_synthetic_cache(**CACHE_A)
    search = ExitProblem(cache, "search")
    holdout = search.on_split("holdout")
    runs = {"dp": (create_engine("dp", max_configs=None), None, 0)}     # every non-dominated cut it kept
    for s in seeds:
        runs[f"nsga2 (seed {s})"] = (create_engine("nsga2", pop_size=100), evals, s)
    runs["nsga2 float encoding"] = (create_engine("nsga2", pop_size=100, encoding="float"), evals, seeds[0])
    runs["optuna nsga2 sampler"] = (create_engine("optuna", sampler="nsga2", pop_size=100), optuna_nsga2_evals, 0)
    runs["optuna tpe"] = (create_engine("optuna", sampler="tpe"), tpe_evals, 0)
    fronts, history = {}, {}
    for name, (engine, n, seed) in runs.items():
        front = engine.run(search, budget=None if n is None else Budget(max_evals=n), seed=seed)
        fronts[name] = front
        history[name] = [list(map(float, h)) for h in getattr(engine, "history_", [])]
        print(f"{name:24s} {len(front):4d} points  {front.n_evals:>10d} evals  {front.exec_time:7.1f} s", flush=True)
    union = np.concatenate([f.F for f in fronts.values()])
    union = union[non_dominated(union)]
    hv, igd = HV(), IGDPlus(union)
    hv_dp = hv(fronts["dp"].F)
    table = {}
    for name, front in fronts.items():
        Fh = holdout.evaluate(front.configs)
        table[name] = {"points": len(front), "evaluations": front.n_evals, "seconds": front.exec_time,
                       "hv_search": hv(front.F), "hv_search_over_dp": hv(front.F) / hv_dp,
                       "hv_holdout": hv(Fh[non_dominated(Fh)]), "igd_plus_search": igd(front.F),
                       "message": front.message}
    table["best_known_front"] = {"points": len(union), "hv_search": hv(union), "hv_search_over_dp": hv(union) / hv_dp}
    return table, history


def workers(n_trials: int, storages: dict[str, str], cache_path: Path) -> dict:
    """1 vs 2 worker processes on one study: all trials land, speed ratio."""
    problem = ExitProblem(write_synthetic_cache(cache_path, **CACHE_A, overwrite=True))
    out = {}
    for kind, url in storages.items():
        res = {}
        for w in (1, 2):
            name = f"bench-{kind}-{w}-{time.time_ns()}"
            engine = create_engine("optuna", sampler="nsga2", pop_size=50, storage=url, study_name=name, workers=w)
            t0 = time.perf_counter()
            front = engine.run(problem, budget=Budget(max_evals=n_trials), seed=0)
            dt = time.perf_counter() - t0
            import optuna
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            trials = optuna.load_study(study_name=name, storage=get_storage(url)).get_trials(
                states=(optuna.trial.TrialState.COMPLETE,))
            res[f"{w}_worker"] = {"seconds": dt, "trials_per_s": n_trials / dt, "evaluations": front.n_evals,
                                  "complete_trials_in_study": len(trials),
                                  "none_lost": len(trials) == front.n_evals == n_trials}
            print(f"{kind:10s} {w} worker(s): {n_trials} trials in {dt:6.1f} s, {len(trials)} in the study",
                  flush=True)
        res["speed_ratio_2_over_1"] = res["1_worker"]["seconds"] / res["2_worker"]["seconds"]
        out[kind] = res
    return out


def plot(history: dict, table: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    hv_dp = table["dp"]["hv_search"]
    ax.axhline(hv_dp, color="k", ls="--", lw=1, label=f"dp ({table['dp']['evaluations']:.2g} threshold cuts scored)")
    ax.axhline(0.99 * hv_dp, color="grey", ls=":", lw=1, label="99% of dp")
    for name, h in history.items():
        if h:
            e, v = np.array(h).T
            ax.plot(e, v, label=name, lw=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume, search split (ref. point (1, 1))")
    lo = min(min(v for _, v in h) for h in history.values() if h)
    ax.set_ylim(max(lo, 0.9 * hv_dp), hv_dp * 1.005)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Hypervolume against evaluations, 50k x 12 positions x 2 heads (cache A)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small budgets (a smoke run)")
    g.add_argument("--full", action="store_true",
                   help="optuna's NSGA-II sampler at 20,000 trials (not 10,000) and TPE at 5,000 (not 2,000); slow")
    args = ap.parse_args()
    evals = 2_000 if args.quick else 20_000
    optuna_nsga2 = 500 if args.quick else 20_000 if args.full else 10_000
    tpe = 100 if args.quick else 5_000 if args.full else 2_000
    n_worker_trials = 40 if args.quick else 300
    t0 = time.perf_counter()
    speed = throughput(100, 3 if args.quick else 20)
    print("evaluate_arrays, configs/s (per CPU second): " + ", ".join(
        f"{k} {speed[k]['configs_per_s']:.0f} ({speed[k]['configs_per_cpu_s']:.0f})"
        for k in ("random", "nsga2_populations", "worst_case_all_enabled_nobody_leaves")), flush=True)
    table, history = quality(evals, optuna_nsga2, tpe, [0] if args.quick else [0, 1, 2])
    with tempfile.TemporaryDirectory() as tmp:
        storages = {"sqlite": f"sqlite:///{tmp}/study.db", "journal": f"journal:///{tmp}/study.log"}
        if os.environ.get("EXITSEARCH_TEST_POSTGRES_URL"):
            storages["postgresql"] = os.environ["EXITSEARCH_TEST_POSTGRES_URL"]
        par = workers(n_worker_trials, storages, Path(tmp) / "cache")
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(history, table, RESULTS / "engines.png")
    figures = {"versions": _versions(), "mode": "quick" if args.quick else "full" if args.full else "default",
               "budgets": {"nsga2": evals, "optuna_nsga2_sampler": optuna_nsga2, "optuna_tpe": tpe,
                           "worker_trials": n_worker_trials},
               "throughput_configs_per_s": speed, "quality_cache_A": table, "workers": par,
               "hv_history": history, "total_seconds": time.perf_counter() - t0,
               "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3]}
    path = save_results("engines", figures)
    print(f"\n{'method':24s} {'HV/dp':>7s} {'HV hold':>8s} {'IGD+':>8s} {'evals':>10s} {'s':>7s}")
    for name, r in table.items():
        if name != "best_known_front":
            print(f"{name:24s} {r['hv_search_over_dp']:7.4f} {r['hv_holdout']:8.4f} {r['igd_plus_search']:8.5f} "
                  f"{r['evaluations']:>10d} {r['seconds']:7.1f}")
    for kind, r in par.items():
        print(f"{kind}: 2 workers / 1 worker speed ratio {r['speed_ratio_2_over_1']:.2f}, "
              f"none lost: {r['1_worker']['none_lost'] and r['2_worker']['none_lost']}")
    print(f"-> {path} and {RESULTS / 'engines.png'} ({figures['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
