"""Batch 1 as one ONNX graph (``exits/onnx_chain.py``): the router's one-image calls with and without it.

At batch 1 a sample leaves at an exit or goes on, one boolean, which an ONNX ``If`` node expresses: a bundle whose
exits are all fused holds its segment graphs chained into one graph (``chain`` in the manifest), and the router
answers a one-image call of a ``max_prob`` configuration with one session call. This script exports the demo's
certified configuration, opens its bundle twice (as exported, and with the chain graph left out of a resealed copy
of the manifest: stage by stage, one session call per stage and the leave test in Python), checks that both give
every image the same prediction and exit, and times single-image calls in interleaved rounds in one process: the
base graph (the router's base configuration), stage by stage, through the chain graph, and the chain graph's
session called directly (what the router's own Python adds)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_b1_graph.py [--rounds 7] [--images 256]

Writes ``benchmarks/results/b1_graph.json`` (machine, load average per thread count).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._machine import interleaved_rounds, save_results  # noqa: E402


def _unchained(bundle: Path, out: Path) -> Path:
    """A copy of ``bundle`` whose manifest leaves its chain graph out (resealed)."""
    from bundle.manifest import MANIFEST, seal_manifest

    shutil.copytree(bundle, out)
    doc = json.loads((out / MANIFEST).read_text())
    doc["graphs"] = [g for g in doc["graphs"] if g["kind"] != "chain"]
    (out / MANIFEST).write_text(json.dumps(seal_manifest({k: v for k, v in doc.items() if k != "fingerprint"})))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    import torch

    from benchmarks.bench_delivery import certified_demo
    from bundle import open_bundle
    from contract import float32_cut
    from exits.export_bundle import export_bundle

    cache, model, x, config, relative_macs, doc = certified_demo()
    images = [np.ascontiguousarray(x[i:i + 1].numpy()) for i in range(args.images)]
    cells: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        export_bundle(model, doc, Path(tmp) / "bundle", cache=cache, exporter="torchscript", announce=False)
        staged_path = _unchained(Path(tmp) / "bundle", Path(tmp) / "staged")
        for t in args.threads:
            torch.set_num_threads(t)
            chained, staged = open_bundle(Path(tmp) / "bundle", threads=t), open_bundle(staged_path, threads=t)
            if chained.manifest.chained is None:
                raise SystemExit("the exported bundle has no batch-1 graph")
            c, s = chained.configs[0], staged.configs[0]
            chain = chained.graphs[chained.manifest.chained]
            cuts = np.array([float32_cut(v) for v in c.thresholds], np.float32)
            same = sum(int(a.predictions[0] == b.predictions[0] and a.exits[0] == b.exits[0])
                       for a, b in ((chained.run(im, c), staged.run(im, s)) for im in images))
            runs = {"base graph": lambda r=chained: [r.run(im, r.base_config) for im in images],
                    "stage by stage": lambda r=staged, c=s: [r.run(im, c) for im in images],
                    "batch-1 graph": lambda r=chained, c=c: [r.run(im, c) for im in images],
                    "its session alone": lambda g=chain, cuts=cuts: [g.session.run(g.names, {"input": im, "cuts": cuts})
                                                                     for im in images]}
            times, load = interleaved_rounds(runs, args.rounds, len(images))
            med = {k: statistics.median(v) for k, v in times.items()}
            delivery = {k: relative_macs * med["base graph"] / med[k] for k in runs if k != "base graph"}
            cells[f"t{t}"] = {"agreement": same / len(images), "us_per_image": {k: 1e6 * v for k, v in med.items()},
                              "delivery": delivery, "loadavg": load}
            print(f"threads {t}: same prediction and exit {same}/{len(images)}; microseconds per image "
                  + ", ".join(f"{k} {1e6 * v:.1f}" for k, v in med.items()) + "; delivery "
                  + ", ".join(f"{k} {v:.3f}" for k, v in delivery.items()) + f"; load {load[0]:.2f}-{load[1]:.2f}",
                  flush=True)
    path = save_results("b1_graph", {"relative_macs": relative_macs, "exits": list(config.exits),
                                     "rounds": args.rounds, "images": args.images, "cells": cells})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
