"""The runtime on the real demo model: agreement with the cache, MACs, accuracy and speed against the base model.

Needs the outputs of ``make pipeline`` (``out/pipeline/``: checkpoint, cache, ``choice.json``, ``front.json``).
Runs ``python -m exits.validate`` (one process per setting: OpenMP reads its wait policy once) on holdout for
the demo configuration (1 thread; 2 threads with passive and with active OpenMP waiting) and for a spread of
the front (1 thread), then writes ``benchmarks/results/runtime.json``::

    .venv/bin/python benchmarks/bench_runtime.py [--pipeline-dir out/pipeline]

Targets (issue 4): >= 99.9% of samples at the cached exit with the cached prediction; measured MACs within
0.5% of predicted; at the demo configuration, accuracy within 0.5 points of the base on holdout and batch-64
CPU throughput >= 0.8 x (1 / relative MACs) x the base model's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: shared machines

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from data_cache.cli_types import positive_int  # noqa: E402
from data_cache.cli_types import threads as thread_count


def _validate(pipeline: Path, config: Path, report: Path, extra: list[str], wait_policy: str = "PASSIVE") -> dict:
    argv = [sys.executable, "-m", "exits.validate", "--config", str(config), "--checkpoint",
            str(pipeline / "checkpoint.pt"), "--dataset", "fashion_mnist", "--split", "holdout", "--cache",
            str(pipeline / "cache"), "--report", str(report), "--quiet"] + extra
    env = dict(os.environ, OMP_WAIT_POLICY=wait_policy)
    if subprocess.run(argv, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        raise SystemExit(f"validation failed: {' '.join(argv)}")
    return dict(json.loads(report.read_text()), omp_wait_policy=wait_policy)


def _summary(report: dict) -> dict:
    base = report["base"]
    rows = []
    for c in report["configs"]:
        p, m = c["predicted"], c["measured"]
        row = {
            "id": c["id"], "n_exits": len(c["exits"]),
            "predicted": {"accuracy": p["accuracy"], "relative_cost": p["relative_cost"]},
            "measured": {"accuracy": m["accuracy"], "relative_cost": m["relative_cost"]},
            "accuracy_drop_vs_base_points": 100 * (base["measured"]["accuracy"] - m["accuracy"]),
            "macs_error_vs_predicted": m["relative_cost"] / p["relative_cost"] - 1,
            "agreement": c["agreement"], "n_disagree": c["n_disagree"],
            "n_disagree_near_threshold": c["n_disagree_near_threshold"],
            "mac_estimate_speedup": c["mac_estimate_speedup"],
        }
        if "throughput_b64" in c:
            t = c["throughput_b64"]
            row.update(throughput_speedup_b64=c["throughput_speedup_b64"],
                       throughput_speedup_b64_rounds=t["speedup_per_round"],
                       base_throughput_b64=t["base_throughput"], throughput_b64=t["throughput"],
                       throughput_vs_mac_estimate=c["throughput_vs_mac_estimate"],
                       throughput_target_met=c["throughput_speedup_b64"] >= 0.8 * c["mac_estimate_speedup"])
        if "latency_b1" in c:
            b1 = c["latency_b1"]
            row.update(latency_speedup_b1=c["latency_speedup_b1"], latency_speedup_b1_mean=b1["speedup_mean"],
                       base_latency_b1_median_ms=1e3 * b1["base_median_s"], latency_b1_median_ms=1e3 * b1["median_s"])
        rows.append(row)
    return {"base": {"accuracy": base["measured"]["accuracy"], "macs_per_sample": base["measured"]["macs_per_sample"]},
            "machine": report["machine"], "omp_wait_policy": report["omp_wait_policy"], "configs": rows}


def time_model(pipeline: Path, config: Path, *, batch_size: int = 64, threads: int = 1) -> dict:
    """Where the time goes: each backbone unit's share of MACs and of measured time (batch 64),
    and the speedup the configuration would reach if time followed the measured per-unit times."""
    import numpy as np
    import torch

    from data_cache import open_cache
    from exits.checkpoints import model_from_checkpoint
    from exits.macs import measure_latency
    from search.config import ExitConfig
    from search.costs import CostTable, cost_table
    from search.problem import ExitProblem

    torch.set_num_threads(threads)
    cache = open_cache(pipeline / "cache")
    model = model_from_checkpoint(pipeline / "checkpoint.pt")
    latency = measure_latency(model, batch_size, warmup=5, repeats=30)
    macs = {u.name: u.macs for u in cache.units}
    segs = [s.name for s in model.segments]
    total_m, total_t = sum(macs[s] for s in segs), sum(latency[s] for s in segs)
    shares = {s: {"macs": macs[s] / total_m, "time": latency[s] / total_t} for s in segs}
    macs_model = cost_table(cache)
    time_model = CostTable(np.array([latency[u.name] for u in cache.units]), macs_model.needs, macs_model.unit_names,
                           "latency")
    entry = json.loads(config.read_text())["configs"][0]
    cfg = ExitConfig.from_json(entry["exits"], cache)
    by_time = ExitProblem(cache, "holdout", costs=time_model).evaluate_one(cfg).relative_cost
    return {"batch_size": batch_size, "unit_shares": shares, "config": entry["id"],
            "relative_time_from_unit_latency": by_time, "speedup_if_time_followed_unit_latency": 1 / by_time}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline-dir", default="out/pipeline")
    p.add_argument("--rounds", type=positive_int, default=5)
    p.add_argument("--threads", type=thread_count, default=1, help="threads of the per-unit time model")
    p.add_argument("--front-configs", type=positive_int, default=8)
    args = p.parse_args()
    pipeline = Path(args.pipeline_dir)
    if not (pipeline / "checkpoint.pt").is_file():
        print(f"{pipeline}/checkpoint.pt not found: run make pipeline first", file=sys.stderr)
        return 2
    timing = ["--rounds", str(args.rounds), "--timing-samples", "10000", "--latency-samples", "300"]
    settings = {"demo_1thread": (1, "PASSIVE"), "demo_2threads_passive": (2, "PASSIVE"),
                "demo_2threads_active": (2, "ACTIVE")}
    figures: dict = {"time_model": time_model(pipeline, pipeline / "choice.json", threads=args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, (threads, policy) in settings.items():
            report = _validate(pipeline, pipeline / "choice.json", tmp / f"{name}.json",
                               timing + ["--threads", str(threads)], policy)
            figures[name] = _summary(report)
        report = _validate(pipeline, pipeline / "front.json", tmp / "front.json",
                           ["--threads", "1", "--rounds", str(args.rounds), "--timing-samples", "4096",
                            "--latency-samples", "100", "--all", "--max-configs",
                            str(args.front_configs)])
        figures["front_1thread"] = _summary(report)
    front = json.loads((pipeline / "front.json").read_text())
    figures["cache_fingerprint"] = front["cache"]["fingerprint"]
    figures["model"] = front["model"]
    path = save_results("runtime", figures)
    for name in (*settings, "front_1thread"):
        f = figures[name]
        print(f"\n{name}: base accuracy {f['base']['accuracy']:.4%}")
        for r in f["configs"]:
            print(f"  {r['id']:<14} acc {r['measured']['accuracy']:.4%} (pred {r['predicted']['accuracy']:.4%}, "
                  f"drop {r['accuracy_drop_vs_base_points']:+.2f} pt)  rel MACs {r['measured']['relative_cost']:.4f} "
                  f"(pred {r['predicted']['relative_cost']:.4f})  agree {r['agreement']:.4%} "
                  f"(near-threshold {r['n_disagree_near_threshold']}/{r['n_disagree']})  b64 x"
                  f"{r.get('throughput_speedup_b64', float('nan')):.2f} "
                  f"(MAC estimate {r['mac_estimate_speedup']:.2f}, target "
                  f"{0.8 * r['mac_estimate_speedup']:.2f})  b1 x{r.get('latency_speedup_b1', float('nan')):.2f}")
    tm = figures["time_model"]
    print("\nshare of MACs / of measured time per backbone segment (batch 64): " +
          ", ".join(f"{k.split(':')[1]} {v['macs']:.2f}/{v['time']:.2f}" for k, v in tm["unit_shares"].items()))
    print(f"demo configuration if time followed the per-unit latencies: relative time "
          f"{tm['relative_time_from_unit_latency']:.3f}, speedup {tm['speedup_if_time_followed_unit_latency']:.2f}")
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
