"""Delivery: the measured speed-up of the demo's certified configuration as a share of its MAC estimate (issue 17),
for this tree and, with ``--baseline-rev``, an older revision measured in the same run.

One worker process per tree and round: it loads that tree's code, picks the certified configuration as
``exits.pipeline`` ships it (dp on search, cheapest certified within 0.5 points), exports a bundle with that tree's
exporter, and times base and configuration alternating (``exits.measure.time_against_base``, medians of
``--inner`` rounds) on Fashion-MNIST test images, for the eager ``ExitRuntime`` and the onnxruntime
``BundleRouter`` at each thread count and batch size. The delivery of a cell is its speed-up times the relative
MACs (1.0: the MAC estimate delivered). The trees alternate from round to round (order reversed every other
round); per cell the script prints the median delivery of each tree and the median of the per-round ratios
(this tree's speed-up over the baseline's)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_delivery.py [--baseline-rev REV] [--rounds 5]

``--compile`` times ``ExitRuntime(..., compile=True)`` (its base model compiled too; every timing shape compiled in
a pass before the timing) instead of the eager runtime and the bundle.

Writes ``benchmarks/results/delivery.json`` (``--out``; machine, load average per round).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# -- worker: runs inside one tree -----------------------------------------------------------------
def certified_demo() -> tuple[Any, Any, Any, Any, float, dict[str, Any]]:
    """The demo as ``exits.pipeline`` ships it: (cache, model, holdout images, the configuration certified within 0.5
    points by dp on search, its relative MACs on holdout, its ``exitconfig/1`` document), from the modules of the
    tree on ``sys.path``."""
    import numpy as np

    from benchmarks.device_check import DEMO_CACHE, DEMO_CHECKPOINT, FASHION_MNIST, holdout_images
    from data_cache import open_cache
    from exits.checkpoints import model_from_checkpoint, read_checkpoint
    from search import ExitProblem, run_search
    from search.export import build_export
    from search.pareto_testing import certified_within_drop

    cache = open_cache(DEMO_CACHE)
    ckpt = read_checkpoint(DEMO_CHECKPOINT)
    model = model_from_checkpoint(ckpt).eval()
    x, _ = holdout_images(FASHION_MNIST, ckpt["data_config"], np.asarray(cache.sample_index("holdout")))
    search, holdout = ExitProblem(cache, "search"), ExitProblem(cache, "holdout")
    config = certified_within_drop(search, 0.5, front=run_search(search, "dp").pareto()).config
    relative_macs = holdout.evaluate_one(config).relative_cost
    doc = build_export([("dp", config)], search=search, holdout=holdout, pareto=False)
    return cache, model, x, config, relative_macs, doc


def worker(tree: Path, threads: list[int], batches: list[int], inner: int, images: int,
           compile: bool = False) -> dict[str, Any]:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.path.insert(0, str(tree))
    import torch

    from bundle import open_bundle
    from exits.export_bundle import export_bundle
    from exits.measure import time_against_base, timing_batches
    from exits.runtime import ExitRuntime

    cache, model, x, config, relative_macs, doc = certified_demo()
    cells: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not compile:
            export_bundle(model, doc, Path(tmp) / "bundle", cache=cache, exporter="torchscript",
                          announce=False)
        for t in threads:
            torch.set_num_threads(t)
            rt = ExitRuntime(model, doc, cache=cache, check_inputs=False, compile=compile)
            runners = {  # (base, configuration, input conversion), the loop's objects bound
                "compiled" if compile else "eager": (rt.base_forward, lambda b, rt=rt: rt.run(b, rt.configs[0]),
                                                     lambda b: b)}
            if not compile:
                router = open_bundle(Path(tmp) / "bundle", threads=t)
                runners["bundle"] = (lambda b, r=router: r.run(b, r.base_config),
                                     lambda b, r=router: r.run(b, r.configs[0]), lambda b: b.numpy())
            for name, (base, run, convert) in runners.items():
                for batch in batches:
                    n = images if batch > 1 else max(64, images // 8)
                    inputs = [convert(b) for b in timing_batches(x, batch, n)]
                    with torch.inference_mode():
                        if compile:   # every shape compiled before the timing
                            for b in inputs:
                                base(b)
                                run(b)
                        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                        r = time_against_base(base, run, inputs, [], inner, torch.device("cpu"))["b64"]
                        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
                    cells[f"{name} t{t} b{batch}"] = {
                        "speedup": r["speedup"], "delivery": r["speedup"] * relative_macs,
                        "base_ms_per_sample": 1e3 * r["base_s"] / r["n_samples"],
                        "config_ms_per_sample": 1e3 * r["config_s"] / r["n_samples"],
                        # page faults per batch call, base and configuration (warm-up calls included)
                        "minor_faults_per_call": faults / (2 * (2 + inner * len(inputs)))}
    return {"relative_macs": relative_macs, "exits": [cache.exits[i].name for i in config.exits],
            "cells": cells, "load": os.getloadavg()[0]}


# -- driver ---------------------------------------------------------------------------------------
def _baseline_tree(rev: str, into: Path) -> Path:
    """The files of revision ``rev`` (git archive), unpacked under ``into``."""
    archive = into / "baseline.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), rev], check=True)
    tree = into / "baseline"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def _run_worker(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree), "--threads",
           *map(str, args.threads), "--batches", *map(str, args.batches), "--inner", str(args.inner),
           "--images", str(args.images)] + (["--compile"] if args.compile else [])
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(tree)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=tree).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-rev", help="an older revision measured in the same run (git archive)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--inner", type=int, default=3, help="base/configuration alternations inside a worker")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--images", type=int, default=2048, help="images per timing pass (batch 1: an eighth)")
    ap.add_argument("--compile", action="store_true",
                    help="the eager runtime with compile=True (base and configuration compiled; no bundle)")
    ap.add_argument("--out", default="delivery", help="results file name under benchmarks/results/ (no suffix)")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.threads, args.batches, args.inner, args.images, args.compile)))
        return 0

    sys.path.insert(0, str(ROOT))
    from benchmarks._machine import save_results

    with tempfile.TemporaryDirectory() as tmp:
        trees = {"current": ROOT}
        if args.baseline_rev:
            trees["baseline"] = _baseline_tree(args.baseline_rev, Path(tmp))
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for name in order:
                runs[name].append(_run_worker(trees[name], args))
                print(f"round {r + 1}/{args.rounds} {name}: load {runs[name][-1]['load']:.2f}", flush=True)
    cells = list(runs["current"][0]["cells"])
    table = {}
    for cell in cells:
        row = {name: statistics.median(x["cells"][cell]["delivery"] for x in rs) for name, rs in runs.items()}
        for name, rs in runs.items():
            row[f"{name} base ms"] = statistics.median(x["cells"][cell]["base_ms_per_sample"] for x in rs)
            row[f"{name} faults"] = statistics.median(x["cells"][cell]["minor_faults_per_call"] for x in rs)
        if "baseline" in runs:
            row["speedup_ratio"] = statistics.median(
                c["cells"][cell]["speedup"] / b["cells"][cell]["speedup"]
                for c, b in zip(runs["current"], runs["baseline"], strict=True))
        table[cell] = row
    print(f"relative MACs {runs['current'][0]['relative_macs']:.4f}; delivery = speed-up x relative MACs")
    print(f"{'cell':<16}" + "".join(f"{k:>18}" for k in table[cells[0]]))
    for cell, row in table.items():
        print(f"{cell:<16}" + "".join(f"{v:>18.3f}" for v in row.values()))
    path = save_results(args.out, {"baseline_rev": args.baseline_rev, "compile": args.compile,
                                     "rounds": args.rounds, "inner": args.inner,
                                     "table": table, "runs": runs})
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
