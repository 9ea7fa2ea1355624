"""What keeping freed memory in the process buys (``exits.memory``): timm models' forward at large batches, with
glibc's default malloc policy against the one ``ExitRuntime`` holds, in the same run.

One worker process per policy and round (glibc's policy is process-wide and cannot be undone), rounds alternating
and the order reversed every other round. A worker times each model (random init, 224 px: ``resnet18``,
``vit_tiny_patch16_224``) at each thread count and batch size: one untimed call, then ``--calls`` calls, their
median time per image and page faults per call (``getrusage``); then the dump pass (``exits.dump.dump_cache``, as
``data_cache.dump`` runs it) of a ResNet-18 with exits after every stage on 256 random images at batch 64, per image;
it reports its peak resident memory. Per cell the
script prints the medians over rounds of each policy and the median of the per-round ratios (default time over held
time: the speed-up from keeping freed memory)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_memory.py [--rounds 3]

Writes ``benchmarks/results/memory.json`` (machine, load average per worker). The early-exit runtime's own figures
(the demo's certified configuration against its base, before and after) come from ``bench_delivery.py
--baseline-rev``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CELLS = (("resnet18", 64), ("vit_tiny_patch16_224", 64), ("vit_tiny_patch16_224", 256))
POLICIES = ("default", "held")


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, int]:
    """Seconds and minor page faults (``getrusage``) of one call ``fn(*args, **kwargs)``."""
    f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0


def worker(policy: str, threads: list[int], calls: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from exits.memory import hold_freed_memory, memory_policy

    record = hold_freed_memory() if policy == "held" else memory_policy()
    import timm
    import torch

    cells: dict[str, Any] = {}
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for name, batch in CELLS:
            model = timm.create_model(name, num_classes=1000).eval()
            x = torch.randn(batch, 3, 224, 224, generator=g)
            for t in threads:
                torch.set_num_threads(t)
                model(x)
                timed = [_timed(model, x) for _ in range(calls)]
                cells[f"{name} t{t} b{batch}"] = {"ms_per_image": 1e3 * statistics.median(s for s, _ in timed) / batch,
                                                  "faults_per_call": statistics.median(f for _, f in timed)}
    cells.update(_dump_cells(threads))
    return {"policy": record, "cells": cells, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load": os.getloadavg()[0]}


def _dump_cells(threads: list[int], n: int = 128) -> dict[str, Any]:
    """``exits.dump.dump_cache`` (what ``data_cache.dump`` runs) of a ResNet-18 with exits after every stage, random
    init, on ``n`` + ``n`` random images at 224 px, batch 64: ms per image and page faults per image."""
    import tempfile

    import torch

    from benchmarks._random_resnet import random_resnet18
    from exits.dump import dump_cache

    model, splits, _ = random_resnet18(n)
    cells = {}
    for t in threads:
        torch.set_num_threads(t)
        with tempfile.TemporaryDirectory() as tmp:
            seconds, faults = _timed(dump_cache, model, splits, Path(tmp) / "cache", k=2, batch_size=64)
        cells[f"dump resnet18 t{t} b64"] = {"ms_per_image": 1e3 * seconds / (2 * n),
                                            "faults_per_call": faults / (2 * n)}
    return cells


def _run_worker(policy: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", policy, "--threads", *map(str, args.threads),
           "--calls", str(args.calls)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=3, help="timed calls per cell in a worker")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default="memory", help="results file name under benchmarks/results/ (no suffix)")
    ap.add_argument("--worker", choices=POLICIES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.threads, args.calls)))
        return 0

    sys.path.insert(0, str(ROOT))
    from benchmarks._machine import save_results

    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in POLICIES}
    for r in range(args.rounds):
        for policy in POLICIES if r % 2 == 0 else POLICIES[::-1]:
            runs[policy].append(_run_worker(policy, args))
            print(f"round {r + 1}/{args.rounds} {policy}: load {runs[policy][-1]['load']:.2f}", flush=True)
    table = {}
    for cell in runs["held"][0]["cells"]:
        row: dict[str, float] = {}
        for p in POLICIES:
            row[f"{p} ms"] = statistics.median(w["cells"][cell]["ms_per_image"] for w in runs[p])
            row[f"{p} faults"] = statistics.median(w["cells"][cell]["faults_per_call"] for w in runs[p])
        row["speedup"] = statistics.median(d["cells"][cell]["ms_per_image"] / h["cells"][cell]["ms_per_image"]
                                           for d, h in zip(runs["default"], runs["held"], strict=True))
        table[cell] = row
    peak = {p: statistics.median(w["peak_rss_mb"] for w in runs[p]) for p in POLICIES}
    print(f"{'cell':<30}" + "".join(f"{k:>16}" for k in table[next(iter(table))]))
    for cell, row in table.items():
        print(f"{cell:<30}" + "".join(f"{v:>16.3f}" for v in row.values()))
    print("peak resident memory, MB: " + ", ".join(f"{p} {v:.0f}" for p, v in peak.items()))
    path = save_results(args.out, {"rounds": args.rounds, "calls": args.calls, "table": table, "peak_rss_mb": peak,
                                    "runs": runs})
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
