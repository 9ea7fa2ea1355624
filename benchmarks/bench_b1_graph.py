"""Batch 1 as one ONNX graph: measured before being built (issue 17, delivery at batch 1).

At batch 1 a sample either leaves at an exit or goes on, a single decision, which an ONNX ``If`` node can express.
This script takes the demo's certified configuration, exports its bundle (every exit fused into its segment graph,
``exits/onnx_graphs.py``), chains those graphs into one graph of nested ``If`` nodes (stage k's graph, then ``If
probs[0, 0] > cuts[k]``: its top-k and k, else the rest), the thresholds given as an input ``cuts`` (float32, the
router's ``float32_cut``), and times, in interleaved rounds in one process, single-image calls of: the router's base
configuration (the base graph), the router's configuration (one session call per stage, the leave test in Python)
and the one graph (one session call). It checks first that the graph gives every image the router's prediction and
exit. Only ``max_prob`` is expressed (the demo's rule); nothing of this ships yet: the router, the profile and the
time model would each need the one-graph path (see the closing note of this change and ``docs/cost-model.md``)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_b1_graph.py [--rounds 7] [--images 256]

Writes ``benchmarks/results/b1_graph.json`` (machine, load average per thread count).
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
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._machine import save_results  # noqa: E402


def chain_graph(bundle: Path) -> tuple[Any, int]:
    """The bundle's backbone segment graphs (each with its exit fused, the last giving the final logits' top-k) as
    one ONNX model: inputs ``input`` (1, ...) and ``cuts`` (stages - 1,), outputs ``probs``, ``ids`` and ``stage``
    (the index of the stage the image left at); and its number of stages."""
    import onnx
    from onnx import TensorProto, compose, helper

    man = json.loads((bundle / "manifest.json").read_text())
    segs = [g for g in man["graphs"] if g["kind"] == "segment"]
    if any(g.get("outputs") != ["output", "logits", "probs", "ids"] for g in segs[:-1]):
        raise SystemExit("the bundle's exits are not all fused: export one configuration")
    models = [compose.add_prefix(onnx.load(str(bundle / g["file"])), f"g{k}_") for k, g in enumerate(segs)]
    inits = [init for m in models for init in m.graph.initializer]
    last = len(models) - 1

    def const(name: str, value: int) -> Any:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name + "_v", TensorProto.INT64, [],
                                                                                   [value]))

    def outputs(names: list[str], suffix: str) -> tuple[list[Any], list[Any]]:
        nodes = [helper.make_node("Identity", [n], [f"{n}_{suffix}"]) for n in names]
        types = (TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT64)
        return nodes, [helper.make_tensor_value_info(f"{n}_{suffix}", t, None)
                       for n, t in zip(names, types, strict=True)]

    def stage(k: int) -> tuple[list[Any], list[str]]:
        g = models[k].graph
        prev = "input" if k == 0 else models[k - 1].graph.output[0].name
        nodes = [helper.make_node("Identity", [prev], [g.input[0].name]), *g.node]
        outs = [o.name for o in g.output]
        if k == last:
            return nodes + [const(f"k{k}", k)], [outs[1], outs[2], f"k{k}"]
        probs, ids = outs[2], outs[3]
        nodes += [const(f"k{k}", k), const(f"zero{k}", 0),
                  helper.make_node("Gather", [probs, f"zero{k}"], [f"row{k}"], axis=0),
                  helper.make_node("Gather", [f"row{k}", f"zero{k}"], [f"p{k}"], axis=0),
                  helper.make_node("Gather", ["cuts", f"k{k}"], [f"cut{k}"], axis=0),
                  helper.make_node("Greater", [f"p{k}", f"cut{k}"], [f"leave{k}"])]
        then_nodes, then_out = outputs([probs, ids, f"k{k}"], f"then{k}")
        rest_nodes, rest = stage(k + 1)
        else_nodes, else_out = outputs(rest, f"else{k}")
        nodes.append(helper.make_node(
            "If", [f"leave{k}"], [f"probs{k}", f"ids{k}", f"stage{k}"],
            then_branch=helper.make_graph(then_nodes, f"then{k}", [], then_out),
            else_branch=helper.make_graph(rest_nodes + else_nodes, f"else{k}", [], else_out)))
        return nodes, [f"probs{k}", f"ids{k}", f"stage{k}"]

    for m in models:
        del m.graph.initializer[:]
    nodes, (probs, ids, at) = stage(0)
    nodes += [helper.make_node("Identity", [probs], ["probs"]), helper.make_node("Identity", [ids], ["ids"]),
              helper.make_node("Identity", [at], ["stage"])]
    graph = helper.make_graph(
        nodes, "batch1",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, *man["input"]["shape"]]),
         helper.make_tensor_value_info("cuts", TensorProto.FLOAT, [last])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("ids", TensorProto.INT64, None),
         helper.make_tensor_value_info("stage", TensorProto.INT64, None)],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=models[0].opset_import)
    model.ir_version = models[0].ir_version
    return model, len(models)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    from benchmarks.device_check import DEMO_CACHE, DEMO_CHECKPOINT, FASHION_MNIST, holdout_images
    from bundle import open_bundle
    from contract import float32_cut
    from data_cache import open_cache
    from exits.checkpoints import model_from_checkpoint, read_checkpoint
    from exits.export_bundle import export_bundle
    from search import ExitProblem, run_search
    from search.export import build_export
    from search.pareto_testing import certified_within_drop

    cache, ckpt = open_cache(DEMO_CACHE), read_checkpoint(DEMO_CHECKPOINT)
    model = model_from_checkpoint(ckpt).eval()
    x, _ = holdout_images(FASHION_MNIST, ckpt["data_config"], np.asarray(cache.sample_index("holdout")))
    search, holdout = ExitProblem(cache, "search"), ExitProblem(cache, "holdout")
    config = certified_within_drop(search, 0.5, front=run_search(search, "dp").pareto()).config
    relative_macs = holdout.evaluate_one(config).relative_cost
    doc = build_export([("dp", config)], search=search, holdout=holdout, pareto=False)
    images = [np.ascontiguousarray(x[i:i + 1].numpy()) for i in range(args.images)]
    cells: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        export_bundle(model, doc, Path(tmp) / "bundle", cache=cache, exporter="torchscript", announce=False)
        graph, stages = chain_graph(Path(tmp) / "bundle")
        for t in args.threads:
            torch.set_num_threads(t)
            router = open_bundle(Path(tmp) / "bundle", threads=t)
            c = router.configs[0]
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = t, 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
            cuts = np.array([float32_cut(v) for v in c.thresholds], np.float32)
            names = [o.name for o in session.get_outputs()]
            exit_of = [*c.exits, router.final_exit]
            same = 0
            for im in images:
                probs, ids, at = session.run(names, {"input": im, "cuts": cuts})
                r = router.run(im, c)
                same += int(ids[0, 0] == r.predictions[0] and exit_of[int(at)] == r.exits[0])
            runs = {"base graph": lambda r=router: [r.run(im, r.base_config) for im in images],
                    "router": lambda r=router, c=c: [r.run(im, c) for im in images],
                    "one graph": lambda s=session, n=names, cuts=cuts: [s.run(n, {"input": im, "cuts": cuts})
                                                                        for im in images]}
            times: dict[str, list[float]] = {k: [] for k in runs}
            load = [os.getloadavg()[0]]
            for r in range(args.rounds):
                for k in (runs if r % 2 == 0 else reversed(list(runs))):
                    t0 = time.perf_counter()
                    runs[k]()
                    times[k].append((time.perf_counter() - t0) / len(images))
            load.append(os.getloadavg()[0])
            med = {k: statistics.median(v) for k, v in times.items()}
            cells[f"t{t}"] = {
                "agreement": same / len(images), "us_per_image": {k: 1e6 * v for k, v in med.items()},
                "delivery": {k: relative_macs * med["base graph"] / med[k] for k in ("router", "one graph")},
                "loadavg": load}
            print(f"threads {t}: same prediction and exit {same}/{len(images)}; microseconds per image "
                  + ", ".join(f"{k} {1e6 * v:.1f}" for k, v in med.items())
                  + f"; delivery router {cells[f't{t}']['delivery']['router']:.3f}, one graph "
                  f"{cells[f't{t}']['delivery']['one graph']:.3f}; load {load[0]:.2f}-{load[1]:.2f}", flush=True)
    path = save_results("b1_graph", {"relative_macs": relative_macs, "stages": stages, "exits": list(config.exits),
                                     "rounds": args.rounds, "images": args.images, "cells": cells})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
