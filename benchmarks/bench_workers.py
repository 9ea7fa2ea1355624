"""Two cores used two ways for throughput serving at batch 64: intra-op threads (one batch at a time, two threads
per kernel) against workers (``run_batches(..., workers=2)``: two batches at a time, one thread each), on the demo's
certified configuration, plain and re-batched, eager ``ExitRuntime`` and onnxruntime ``BundleRouter``.

Each mode's base model runs the same way (intra-op: batch after batch on two threads; workers: two threads each
running every other batch on one thread), so a configuration's speed-up is over the base model served alike. All
cases of a runtime run in the same rounds, their order reversed every other round; medians over rounds of the time
per image, speed-ups per round, then their median. The delivery of a case is its speed-up times the relative MACs
(1.0: the MAC estimate delivered). The base model and the plain configuration on one thread, batch after batch, give
how each scales to the workers::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_workers.py [--rounds 5] [--images 2048]

Writes ``benchmarks/results/workers.json`` (machine, load average before and after).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: shared machines
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from data_cache.cli_types import positive_int  # noqa: E402

BATCH = 64
WORKERS = 2


def _cases_eager(rt: Any, batches: list[Any]) -> dict[str, tuple[int, Callable[[], Any]]]:
    """Case name -> (intra-op threads, run over every batch)."""
    from exits.measure import parallel_stream

    cfg = rt.configs[0]
    base_workers = parallel_stream(rt.base_forward, WORKERS)  # as exits.validate --workers times the base model
    return {
        "intra-op: base": (WORKERS, lambda: [rt.base_forward(b) for b in batches]),
        "intra-op: plain": (WORKERS, lambda: rt.run_batches(batches, cfg)),
        "intra-op: re-batched": (WORKERS, lambda: rt.run_batches(batches, cfg, rebatch=True)),
        "one thread: base": (1, lambda: [rt.base_forward(b) for b in batches]),
        "one thread: plain": (1, lambda: rt.run_batches(batches, cfg)),
        "workers: base": (1, lambda: base_workers(batches)),
        "workers: plain": (1, lambda: rt.run_batches(batches, cfg, workers=WORKERS)),
        "workers: re-batched": (1, lambda: rt.run_batches(batches, cfg, rebatch=True, workers=WORKERS)),
    }


def _cases_bundle(two: Any, one: Any, batches: list[Any]) -> dict[str, tuple[int, Callable[[], Any]]]:
    """The same cases on a router opened with two threads (intra-op) and one opened with one (workers)."""
    c2, c1 = two.configs[0], one.configs[0]
    return {
        "intra-op: base": (WORKERS, lambda: two.run_batches(batches, two.base_config)),
        "intra-op: plain": (WORKERS, lambda: two.run_batches(batches, c2)),
        "intra-op: re-batched": (WORKERS, lambda: two.run_batches(batches, c2, rebatch=True)),
        "one thread: base": (1, lambda: one.run_batches(batches, one.base_config)),
        "one thread: plain": (1, lambda: one.run_batches(batches, c1)),
        "workers: base": (1, lambda: one.run_batches(batches, one.base_config, workers=WORKERS)),
        "workers: plain": (1, lambda: one.run_batches(batches, c1, workers=WORKERS)),
        "workers: re-batched": (1, lambda: one.run_batches(batches, c1, rebatch=True, workers=WORKERS)),
    }


def _measure(cases: dict[str, tuple[int, Callable[[], Any]]], rounds: int, n: int) -> dict[str, list[float]]:
    """Milliseconds per image of every case in each round (one warm-up call each first)."""
    import torch

    for threads, run in cases.values():
        torch.set_num_threads(threads)
        run()
    out: dict[str, list[float]] = {k: [] for k in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            threads, run = cases[name]
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            run()
            out[name].append(1e3 * (time.perf_counter() - t0) / n)
    return out


def _summary(times: dict[str, list[float]], relative_macs: float) -> dict[str, Any]:
    out: dict[str, Any] = {"ms_per_image": {k: statistics.median(v) for k, v in times.items()}}
    for mode in ("intra-op", "workers"):
        base = times[f"{mode}: base"]
        for kind in ("plain", "re-batched"):
            case = times[f"{mode}: {kind}"]
            speedup = statistics.median(b / c for b, c in zip(base, case, strict=True))
            over_intra = statistics.median(b / c for b, c in zip(times["intra-op: base"], case, strict=True))
            out[f"{mode}: {kind}"] = {"speedup": speedup, "delivery": speedup * relative_macs,
                                      "speedup_over_intra_op_base": over_intra}
    # how each scales from one thread to the workers (a one-thread time table assumes both alike)
    out["workers_scaling"] = {kind: statistics.median(a / b for a, b in zip(times[f"one thread: {kind}"],
                                                                            times[f"workers: {kind}"], strict=True))
                              for kind in ("base", "plain")}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=positive_int, default=5)
    p.add_argument("--images", type=positive_int, default=2048, help="holdout images (batches of 64)")
    args = p.parse_args(argv)
    import torch

    from benchmarks.bench_delivery import certified_demo
    from bundle import open_bundle
    from exits.export_bundle import export_bundle
    from exits.runtime import ExitRuntime

    load_before = os.getloadavg()
    cache, model, x, config, relative_macs, doc = certified_demo()
    x = x[: args.images]
    batches = [x[i:i + BATCH] for i in range(0, len(x), BATCH)]
    results: dict[str, Any] = {"relative_macs": relative_macs, "exits": [cache.exits[e].name for e in config.exits],
                               "batch": BATCH, "workers": WORKERS, "images": len(x), "rounds": args.rounds,
                               "torch": torch.__version__}
    rt = ExitRuntime(model, doc, cache=cache, check_inputs=False)
    results["eager"] = _summary(_measure(_cases_eager(rt, batches), args.rounds, len(x)), relative_macs)
    with tempfile.TemporaryDirectory() as tmp:
        export_bundle(model, doc, Path(tmp) / "bundle", cache=cache, exporter="torchscript", announce=False)
        two, one = open_bundle(Path(tmp) / "bundle", threads=WORKERS), open_bundle(Path(tmp) / "bundle", threads=1)
        numpy_batches = [b.numpy() for b in batches]
        results["bundle"] = _summary(_measure(_cases_bundle(two, one, numpy_batches), args.rounds, len(x)),
                                     relative_macs)
    results["loadavg_before"], results["loadavg_after"] = list(load_before), list(os.getloadavg())
    for runtime in ("eager", "bundle"):
        r = results[runtime]
        print(f"{runtime}: base {r['ms_per_image']['intra-op: base']:.4f} ms/image on 2 threads, "
              f"{r['ms_per_image']['workers: base']:.4f} on 2 workers")
        for case in ("intra-op: plain", "intra-op: re-batched", "workers: plain", "workers: re-batched"):
            c = r[case]
            print(f"  {case:22s} x{c['speedup']:.3f} over its base, delivery {c['delivery']:.3f} "
                  f"(x{c['speedup_over_intra_op_base']:.3f} over the intra-op base)")
        s = r["workers_scaling"]
        print(f"  2 workers over one thread: base x{s['base']:.3f}, configuration (plain) x{s['plain']:.3f}")
    print(f"load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}; relative MACs {relative_macs:.4f}")
    print(save_results("workers", results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
