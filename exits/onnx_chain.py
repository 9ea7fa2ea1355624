"""A bundle's batch-1 graph: its backbone segment graphs, every exit fused, chained into one ONNX graph.

At batch 1 a sample leaves at an exit or goes on: one boolean, which an ONNX ``If`` node expresses. Stage k runs
its fused segment graph, then ``If probs[0, 0] > cuts[k]``: its top-k and k, else the next stage; the final stage
gives the final logits' top-k. Inputs ``input`` (1, ...) and ``cuts`` (one float32 per early exit, as
``contract.float32_cut`` gives them: the rule ``max_prob``'s leave test, unchanged); outputs ``probs`` and ``ids``
(the top-k where the row left), ``stage`` (int64, the stage it left at) and ``finite`` (bool: the input's sum is
finite, so the router need not test the input's values before the call; a false one it tests after, and refuses
NaN and infinite values as for any batch). The router runs a one-row batch of a
configuration that enables exactly these exits with ``max_prob`` as one session call instead of one per stage and a
leave test in Python between them (``bundle/router.py``, where that is faster: timed at load); on the demo that took
its time per image from 344.0 to 324.6 microseconds on one thread (``benchmarks/bench_b1_graph.py``). Built from the
exported graphs with the ``onnx`` package, and checked at export against them, stage by stage (:func:`check_chain`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ExitsError

__all__ = ["CHAIN_OUTPUTS", "chain_model", "check_chain"]

CHAIN_OUTPUTS = ("probs", "ids", "stage", "finite")


def chain_model(models: Sequence[Any], input_shape: Sequence[int]) -> Any:
    """One ONNX model from the fused segment graphs ``models`` (``onnx.ModelProto``, in order; each but the last
    outputs ``(state, logits, probs, ids)``, the last ``(logits, probs, ids)``) for inputs of ``input_shape``
    (without the batch axis)."""
    from onnx import TensorProto, compose, helper, inliner

    models = [compose.add_prefix(inliner.inline_local_functions(m), f"s{k}_") for k, m in enumerate(models)]
    initializers = [init for m in models for init in m.graph.initializer]
    last = len(models) - 1

    def const(name: str, value: int) -> Any:
        return helper.make_node("Constant", [], [name],
                                value=helper.make_tensor(f"{name}_value", TensorProto.INT64, [], [value]))

    def returned(names: Sequence[str], suffix: str) -> tuple[list[Any], list[Any]]:
        types = (TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT64)
        nodes = [helper.make_node("Identity", [n], [f"{n}_{suffix}"]) for n in names]
        return nodes, [helper.make_tensor_value_info(f"{n}_{suffix}", t, None)
                       for n, t in zip(names, types, strict=True)]

    def stage(k: int) -> tuple[list[Any], list[str]]:
        g = models[k].graph
        source = "input" if k == 0 else models[k - 1].graph.output[0].name
        nodes = [helper.make_node("Identity", [source], [g.input[0].name]), *g.node, const(f"k{k}", k)]
        outs = [o.name for o in g.output]
        if k == last:
            return nodes, [outs[1], outs[2], f"k{k}"]
        probs, ids = outs[2], outs[3]
        nodes += [const(f"zero{k}", 0),
                  helper.make_node("Gather", [probs, f"zero{k}"], [f"row{k}"], axis=0),
                  helper.make_node("Gather", [f"row{k}", f"zero{k}"], [f"p{k}"], axis=0),
                  helper.make_node("Gather", ["cuts", f"k{k}"], [f"cut{k}"], axis=0),
                  helper.make_node("Greater", [f"p{k}", f"cut{k}"], [f"leave{k}"])]
        then_nodes, then_out = returned([probs, ids, f"k{k}"], f"then{k}")
        rest_nodes, rest = stage(k + 1)
        else_nodes, else_out = returned(rest, f"else{k}")
        nodes.append(helper.make_node(
            "If", [f"leave{k}"], [f"probs{k}", f"ids{k}", f"stage{k}"],
            then_branch=helper.make_graph(then_nodes, f"then{k}", [], then_out),
            else_branch=helper.make_graph(rest_nodes + else_nodes, f"else{k}", [], else_out)))
        return nodes, [f"probs{k}", f"ids{k}", f"stage{k}"]

    for m in models:
        del m.graph.initializer[:]
    nodes, (probs, ids, at) = stage(0)
    nodes += [helper.make_node("Identity", [src], [dst]) for src, dst in zip((probs, ids, at), CHAIN_OUTPUTS[:3],
                                                                           strict=True)]
    nodes += [helper.make_node("ReduceSum", ["input"], ["total"], keepdims=0),
              helper.make_node("IsNaN", ["total"], ["nan"]), helper.make_node("IsInf", ["total"], ["inf"]),
              helper.make_node("Or", ["nan", "inf"], ["bad"]), helper.make_node("Not", ["bad"], ["finite"])]
    graph = helper.make_graph(
        nodes, "batch1",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, *input_shape]),
         helper.make_tensor_value_info("cuts", TensorProto.FLOAT, [last])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("ids", TensorProto.INT64, None),
         helper.make_tensor_value_info("stage", TensorProto.INT64, []),
         helper.make_tensor_value_info("finite", TensorProto.BOOL, [])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=models[0].opset_import)
    model.ir_version = models[0].ir_version
    return model


def check_chain(data: bytes, stages: Sequence[bytes], images: np.ndarray) -> float:
    """The largest difference of the chained graph ``data``'s probabilities from its stage graphs ``stages`` run one
    after another, on each image of ``images`` forced to leave at each stage in turn (a cut of -1 there, 2 before:
    probabilities lie in [0, 1]); ExitsError where it leaves elsewhere, ranks other classes or differs by more than
    1e-6."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    chain = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    graphs = [ort.InferenceSession(g, sess_options=options, providers=["CPUExecutionProvider"]) for g in stages]
    worst = 0.0
    for x in images:
        state, expected = x[None], []
        for g in graphs:
            outs = g.run(None, {g.get_inputs()[0].name: state})
            state = outs[0]
            expected.append(outs[-2:])
        for k, (probs, ids) in enumerate(expected):
            cuts = np.array([2.0] * k + [-1.0] * (len(graphs) - 1 - k), np.float32)
            got_probs, got_ids, got_stage, finite = chain.run(list(CHAIN_OUTPUTS), {"input": x[None], "cuts": cuts})
            diff = float(np.abs(got_probs - probs).max()) if got_probs.shape == probs.shape else np.inf
            worst = max(worst, diff)
            if int(got_stage) != k or not np.array_equal(got_ids, ids) or diff > 1e-6 or not finite:
                raise ExitsError(f"the batch-1 graph differs from its stage graphs for a row leaving at stage {k}")
    return worst
