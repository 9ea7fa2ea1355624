"""One image at a time on 1 and 2 onnxruntime threads: the demo's certified bundle opened both ways.

The router's sessions keep their intra-op workers from spinning (``session.intra_op.allow_spinning = 0``, see
``docs/bundle.md``), so each call wakes them, which a one-image call of a small model pays for. This script exports
the demo's certified configuration, opens its bundle with ``threads=1`` and ``threads=2`` in one process, and times
single-image calls of the base graph and of the configuration for both in interleaved rounds (medians)::

    .venv/bin/python benchmarks/bench_b1_threads.py [--rounds 7] [--images 200]

No ``OMP_WAIT_POLICY`` is set (as shipped). Writes ``benchmarks/results/b1_threads.json`` (machine, load average).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._machine import interleaved_rounds, save_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args()

    from benchmarks.bench_delivery import certified_demo
    from bundle import open_bundle
    from exits.export_bundle import export_bundle

    cache, model, x, config, relative_macs, doc = certified_demo()
    images = [np.ascontiguousarray(x[i:i + 1].numpy()) for i in range(args.images)]
    with tempfile.TemporaryDirectory() as tmp:
        export_bundle(model, doc, Path(tmp) / "bundle", cache=cache, exporter="torchscript", announce=False)
        routers = {t: open_bundle(Path(tmp) / "bundle", threads=t) for t in (1, 2)}
        runs = {f"{kind} t{t}": (lambda r=r, c=(r.base_config if kind == "base" else r.configs[0]):
                                 [r.run(im, c) for im in images])
                for t, r in routers.items() for kind in ("base", "config")}
        for run in runs.values():  # first calls: allocations, kernel selection
            run()
        times, load = interleaved_rounds(runs, args.rounds, len(images))
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    figures = {
        "ms_per_image": ms,
        "rounds_ms": {k: [1e3 * v for v in vs] for k, vs in times.items()},
        "speedup": {f"t{t}": ms[f"base t{t}"] / ms[f"config t{t}"] for t in routers},
        "two_over_one": {kind: ms[f"{kind} t2"] / ms[f"{kind} t1"] for kind in ("base", "config")},
        "one_graph": {f"t{t}": r.one_graph for t, r in routers.items()},
    }
    for k, v in ms.items():
        print(f"{k}: {v:.3f} ms per image (rounds {1e3 * min(times[k]):.3f}-{1e3 * max(times[k]):.3f})")
    print("2 threads over 1: " + ", ".join(f"{k} x{v:.2f}" for k, v in figures["two_over_one"].items())
          + "; speed-up over the base graph: " + ", ".join(f"{k} x{v:.2f}" for k, v in figures["speedup"].items())
          + f"; load {load[0]:.2f}-{load[1]:.2f}")
    path = save_results("b1_threads", {"relative_macs": relative_macs, "exits": list(config.exits),
                                       "rounds": args.rounds, "images": args.images, "loadavg": load, **figures})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
