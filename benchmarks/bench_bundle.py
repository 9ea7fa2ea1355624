"""The demo's chosen configuration as an ONNX bundle: agreement with the cache, MACs, speed against the exported base
model and against the eager ``ExitRuntime``, all on one CPU thread in one process.

Inputs (first found): ``--pipeline-dir`` (default ``out/pipeline``: ``checkpoint.pt``, ``cache/``, ``choice.json``,
``front.json`` from ``make pipeline``), else the bundled demo (``data_cache/bundled/fashion_mnist.checkpoint.pt``
with the bundled cache; the choice is then searched as the pipeline does, ``search.pareto --max-drop 0.5``); each path
can also be given (``--checkpoint``, ``--cache``, ``--config``, ``--front``).
Writes ``benchmarks/results/bundle.json``::

    .venv/bin/python benchmarks/bench_bundle.py [--pipeline-dir out/pipeline]

Targets (issue 12), on holdout: >= 99.9% of samples leave at the exit the cache predicted with the same prediction
(near-threshold differences counted), MACs as predicted; batch 64, one thread: bundle throughput >= 0.8 x
(1 / relative MACs) x that of the exported base model. Reported too: batch-1 latency, the bundle against the eager
``ExitRuntime`` on the same configuration (and the base graph against the eager base model), export time, and a
table bundle of configurations spread over the front (agreement of each, batch-64 speedups).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: shared machines

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._machine import save_results  # noqa: E402
from data_cache.cli_types import non_negative_int, positive_int  # noqa: E402

BUNDLED_CHECKPOINT = ROOT / "data_cache" / "bundled" / "fashion_mnist.checkpoint.pt"


def _inputs(args: argparse.Namespace, tmp: Path) -> dict[str, Path | None]:
    """Checkpoint, cache, chosen configuration and front: given paths, else the pipeline's, else the bundled demo."""
    pipeline = Path(args.pipeline_dir)
    if (pipeline / "checkpoint.pt").is_file() and (pipeline / "cache").is_dir():
        found = {"checkpoint": pipeline / "checkpoint.pt", "cache": pipeline / "cache",
                 "config": pipeline / "choice.json", "front": pipeline / "front.json"}
    else:
        from data_cache.bundled import bundled_cache_path

        found = {"checkpoint": BUNDLED_CHECKPOINT, "cache": bundled_cache_path(), "config": None, "front": None}
    for key in found:
        if getattr(args, key) is not None:
            found[key] = Path(getattr(args, key))
    if found["checkpoint"] is None or not found["checkpoint"].is_file() or found["cache"] is None:
        raise SystemExit(f"no demo checkpoint and cache: run make pipeline (looked in {pipeline} and "
                         f"{BUNDLED_CHECKPOINT}) or pass --checkpoint and --cache")
    if found["config"] is None or not found["config"].is_file():
        from search.pareto import main as pareto_main

        found["config"], found["front"] = tmp / "choice.json", tmp / "front.json"
        if pareto_main([str(found["cache"]), "--methods", "dp", "--max-drop", "0.5", "--export", str(found["front"]),
                        "--export-choice", str(found["config"]), "--no-progress"]) != 0:
            raise SystemExit("could not search the cache for the chosen configuration")
    if found["front"] is not None and not found["front"].is_file():
        found["front"] = None
    return found


def _eager_vs_bundle(router, runtime, timing: list, rounds: int) -> dict:
    """Batch-64 throughput of the bundle and of the eager ExitRuntime on the same configuration (and of the base
    graph against the eager base model), alternating in rounds."""
    import torch

    tensors = [torch.from_numpy(b) for b in timing]
    runs = {"bundle": lambda: [router.run(b, router.config) for b in timing],
            "eager": lambda: [runtime.run(b) for b in tensors],
            "bundle_base": lambda: [router.run(b, router.base_config) for b in timing],
            "eager_base": lambda: [runtime.base_forward(b) for b in tensors]}
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    n = sum(len(b) for b in timing)
    tp = {k: n / statistics.median(v) for k, v in times.items()}
    return {"n_samples": n, "rounds": rounds, "throughput": tp,
            "bundle_over_eager": tp["bundle"] / tp["eager"],
            "base_graph_over_eager_base": tp["bundle_base"] / tp["eager_base"],
            "eager_speedup_over_eager_base": tp["eager"] / tp["eager_base"]}


def _summary(report: dict) -> list[dict]:
    rows = []
    for c in report["configs"]:
        p, m = c["predicted"], c["measured"]
        row = {"id": c["id"], "n_exits": len(c["exits"]),
               "predicted": {"accuracy": p["accuracy"], "relative_cost": p["relative_cost"]},
               "measured": {"accuracy": m["accuracy"], "relative_cost": m["relative_cost"]},
               "macs_error_vs_predicted": m["relative_cost"] / p["relative_cost"] - 1,
               "agreement": c["agreement"], "n_disagree": c["n_disagree"],
               "n_disagree_near_threshold": c["n_disagree_near_threshold"],
               "mac_estimate_speedup": c["mac_estimate_speedup"]}
        if "throughput_b64" in c:
            t = c["throughput_b64"]
            row.update(throughput_speedup_b64=c["throughput_speedup_b64"], speedup_b64_rounds=t["speedup_per_round"],
                       base_throughput_b64=t["base_throughput"], throughput_b64=t["throughput"],
                       throughput_target_b64=0.8 * c["mac_estimate_speedup"],
                       throughput_target_met=c["throughput_speedup_b64"] >= 0.8 * c["mac_estimate_speedup"])
        if "latency_b1" in c:
            b1 = c["latency_b1"]
            row.update(latency_speedup_b1=c["latency_speedup_b1"], base_latency_b1_median_ms=1e3 * b1["base_median_s"],
                       latency_b1_median_ms=1e3 * b1["median_s"])
        rows.append(row)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline-dir", default=str(ROOT / "out" / "pipeline"))
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--cache", default=None)
    p.add_argument("--config", default=None, help="the chosen configuration (exitconfig/1, one entry)")
    p.add_argument("--front", default=None, help="a front (exitconfig/1) for the table bundle")
    p.add_argument("--exporter", default=None, help="dynamo or torchscript (default: dynamo where available)")
    p.add_argument("--rounds", type=positive_int, default=5)
    p.add_argument("--threads", type=positive_int, default=1,
                   help="onnxruntime threads per session and torch threads "
                        "(default 1; other counts save results/bundle_threads<N>.json)")
    p.add_argument("--timing-samples", type=positive_int, default=4096)
    p.add_argument("--latency-samples", type=positive_int, default=300)
    p.add_argument("--front-configs", type=non_negative_int, default=6,
                   help="configurations of the table bundle (0: none)")
    args = p.parse_args()

    import numpy as np
    import torch

    from bundle import open_bundle
    from data_cache import open_cache
    from exits.checkpoints import model_from_checkpoint, read_checkpoint
    from exits.export_bundle import export_bundle
    from exits.measure import spread
    from exits.runtime import ExitRuntime
    from exits.validate_bundle import load_split, validate_bundle

    torch.set_num_threads(args.threads)
    loadavg_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = _inputs(args, tmp)
        cache = open_cache(paths["cache"])
        ckpt = read_checkpoint(paths["checkpoint"])
        model = model_from_checkpoint(ckpt)
        t0 = time.perf_counter()
        manifest = export_bundle(model, json.loads(paths["config"].read_text()), tmp / "bundle", cache=cache,
                                 data_config=ckpt.get("data_config"), data=ckpt.get("data"), exporter=args.exporter)
        export_s = time.perf_counter() - t0
        router = open_bundle(tmp / "bundle", threads=args.threads)
        batches = load_split(router, cache, "holdout", batch_size=64)
        xs = np.concatenate([x for x, _ in batches])[: args.timing_samples]
        timing = [xs[i:i + 64] for i in range(0, len(xs), 64)]
        latency = [xs[i:i + 1] for i in range(min(args.latency_samples, len(xs)))]
        report = validate_bundle(router, router.configs, batches, split="holdout", cache=cache, timing_batches=timing,
                                 latency_samples=latency, rounds=args.rounds)
        runtime = ExitRuntime(model, json.loads(paths["config"].read_text()), cache=cache)
        eager = _eager_vs_bundle(router, runtime, timing, args.rounds)
        figures = {
            "inputs": {k: None if v is None else str(v) for k, v in paths.items()},
            "cache_fingerprint": cache.fingerprint, "model": manifest["model"],
            "threads": {"onnxruntime": args.threads, "torch": torch.get_num_threads()},
            "export": {"seconds": export_s, "exporter": manifest["onnx"]["exporter"],
                       "opset": manifest["onnx"]["opset"],
                       "n_graphs": len(manifest["graphs"]), "check": manifest["onnx"]["check"],
                       "graphs": [{k: g[k] for k in ("name", "units", "macs", "max_abs_diff")}
                                  for g in manifest["graphs"]]},
            "base": report["base"], "machine_report": report["machine"],
            "chosen": _summary(report), "eager": eager,
        }
        if args.front_configs and paths["front"] is not None:
            front = json.loads(paths["front"].read_text())
            rt = ExitRuntime(model, front, cache=cache)
            ids = [c.id for c in spread(rt.configs, args.front_configs)]
            export_bundle(model, front, tmp / "table", cache=cache, ids=ids, data_config=ckpt.get("data_config"),
                          data=ckpt.get("data"), exporter=args.exporter)
            table = open_bundle(tmp / "table", threads=args.threads)
            table_report = validate_bundle(table, table.configs, batches, split="holdout", cache=cache,
                                           timing_batches=timing, rounds=3)
            figures["front_table"] = {"n_graphs": len(table.graphs), "configs": _summary(table_report)}
    figures["loadavg_start"], figures["loadavg_end"] = list(loadavg_start), list(os.getloadavg())
    path = save_results("bundle" if args.threads == 1 else f"bundle_threads{args.threads}", figures)
    b = figures["base"]
    print(f"export: {figures['export']['n_graphs']} graphs in {export_s:.1f} s ({figures['export']['exporter']}, "
          f"opset {figures['export']['opset']}); largest difference from PyTorch "
          f"{figures['export']['check']['max_abs_diff']:.2g}")
    print(f"holdout base graph: accuracy {b['measured']['accuracy']:.4%} (cache {b['predicted']['accuracy']:.4%}), "
          f"same prediction as the cache for {b['measured']['agreement_with_cache']:.4%}")
    for title, rows in (("chosen", figures["chosen"]),
                        ("front table", figures.get("front_table", {}).get("configs", []))):
        for r in rows:
            print(f"  {title:<11} {r['id']:<14} acc {r['measured']['accuracy']:.4%} "
                  f"(pred {r['predicted']['accuracy']:.4%})"
                  f"  rel MACs {r['measured']['relative_cost']:.4f} "
                  f"(pred {r['predicted']['relative_cost']:.4f})  agree "
                  f"{r['agreement']:.4%} (near-threshold {r['n_disagree_near_threshold']}/{r['n_disagree']})  "
                  f"b64 x"
                  f"{r.get('throughput_speedup_b64', float('nan')):.2f} "
                  f"(MAC estimate {r['mac_estimate_speedup']:.2f}, target "
                  f"{0.8 * r['mac_estimate_speedup']:.2f})"
                  + (f"  b1 x{r['latency_speedup_b1']:.2f}" if "latency_speedup_b1" in r else ""))
    tp = eager["throughput"]
    print(f"batch 64, {args.threads} thread(s), images/s: bundle {tp['bundle']:.0f}, "
          f"eager ExitRuntime {tp['eager']:.0f} "
          f"(bundle / eager {eager['bundle_over_eager']:.2f}); base graph {tp['bundle_base']:.0f}, eager base "
          f"{tp['eager_base']:.0f} ({eager['base_graph_over_eager_base']:.2f})")
    print(f"load average {figures['loadavg_start']} -> {figures['loadavg_end']}; written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
