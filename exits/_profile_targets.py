"""What ``python -m exits.profile`` times on each runtime: every unit (or bundle graph), the base model and the
runtime's own steps, each as ``make(n) -> thunk`` that runs the thing once on ``n`` rows of prepared inputs.

Inputs are random images at the model's input size, run once through the whole model at the largest batch
size; each unit then gets the first ``n`` rows of what it really reads there (its source's output state, a
head the stream), so every call does exactly the work of the runtime on an ``n``-row batch. A step is what the
runtime does at an enabled exit besides the head: scores, the threshold test, the split into leaving and staying
rows and the compaction of the state that goes on; its threshold is the median score, so half the rows leave.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Probe", "eager_probes", "onnx_probes"]

Thunk = Callable[[], Any]


@dataclass(frozen=True)
class Probe:
    """One timed thing (``data_cache.cost_tables.TimedItem`` fields) and how to run it on ``n`` rows."""

    name: str
    kind: str
    make: Callable[[int], Thunk]
    units: tuple[str, ...] = ()
    exit: str | None = None


# -- the eager runtime (exits.runtime.ExitRuntime) ---------------------------------------------
def eager_probes(runtime: Any, batch_size: int, score: str, *, seed: int = 0) -> list[Probe]:
    """Probes of an ``ExitRuntime``'s model on ``runtime.device``: units in execution order, steps, the base."""
    from .runtime import exit_scores

    model, device = runtime.model, runtime.device
    g = torch.Generator().manual_seed(seed)
    x = runtime._input(torch.randn(batch_size, *model.input_size, generator=g))
    outputs: dict[str | None, Any] = {None: x}
    with torch.inference_mode():
        for segs in (model.saver_segments, model.segments):
            h = x
            for seg in segs:
                h = outputs[seg.name] = seg(h)
    segments = {s.name: s for s in (*model.saver_segments, *model.segments)}

    def rows(source: str | None, n: int) -> Any:
        if source is None:
            return x[:n]
        return segments[source].select(outputs[source], torch.arange(n, device=device))

    probes = []
    for unit in model.units:
        def make(n: int, unit=unit) -> Thunk:
            inp = rows(unit.source, n)
            if unit.kind == "head":
                inp = segments[unit.source].stream(inp)
            fn = runtime._fn(unit.module)
            return lambda: fn(inp)
        probes.append(Probe(unit.name, unit.kind, make, units=(unit.name,)))
    by_position = {s.position: s for s in segments.values()}
    for spec in model.exits[:-1]:
        seg = by_position[spec.position]
        with torch.inference_mode():
            logits = outputs[seg.name] if spec.key is None else model.heads[spec.key](seg.stream(outputs[seg.name]))
            cut = float(exit_scores(logits, score)[0].float().median())
        probes.append(Probe(f"step:{spec.name}", "step", _eager_step(seg, outputs[seg.name], logits, cut, score),
                            exit=spec.name))
    final_logits = outputs[model.segments[-1].name]
    probes.append(Probe("finish", "finish", lambda n: (lambda: exit_scores(final_logits[:n], score))))
    probes.append(Probe("collect", "collect", lambda n: _eager_collect(runtime, final_logits, n)))
    probes.append(Probe("base", "base", lambda n: (lambda: runtime.base_forward(x[:n]))))
    return probes


def _eager_step(seg: Any, state: Any, logits: torch.Tensor, cut: float, score: str) -> Callable[[int], Thunk]:
    """What ``ExitRuntime.run`` does at an enabled exit after the head, on ``n`` rows (``contract.schedule``):
    scores on the host, the leave test, the leaving rows recorded, the compaction of the state that goes on."""
    from contract import get_rule

    from ._runtime_stages import scores_numpy

    rule = get_rule(score)

    def make(n: int) -> Thunk:
        device = logits.device
        h = seg.select(state, torch.arange(n, device=device))
        z = logits[:n]
        ids = np.arange(n)
        preds, scores = np.empty(n, np.int64), np.empty(n, np.float32)

        def step() -> Any:
            s, p = scores_numpy(z, rule)
            leave = s > cut
            preds[ids[leave]], scores[ids[leave]] = p[leave], s[leave]
            keep = np.flatnonzero(~leave)
            t = torch.from_numpy(keep)
            return ids[keep], seg.select(h, t if device.type == "cpu" else t.to(device))
        return step
    return make


def _eager_collect(runtime: Any, logits: torch.Tensor, n: int) -> Thunk:
    """What ``ExitRuntime.run`` does once per batch after the exits: the result built from the output arrays
    (rows are written in input order as they leave)."""
    from contract.schedule import Routed

    return lambda: runtime._result(Routed.empty(n))


# -- the bundle router (bundle.BundleRouter) -----------------------------------------------------
def onnx_probes(router: Any, batch_size: int, score: str, *, seed: int = 0) -> list[Probe]:
    """Probes of a bundle router: every graph of its chains, its head graphs, steps at served exits, the base."""
    from bundle.router import RouteResult, exit_scores
    from contract import float32_cut

    man = router.manifest
    x = np.random.default_rng(seed).standard_normal((batch_size, *man.input_shape), dtype=np.float32)
    out: dict[str, np.ndarray] = {}
    for chain in ("saver", "backbone"):
        h = x
        for name in man.chains[chain]:
            h = out[name] = router.graphs[name](h)
    probes = []
    for chain in ("saver", "backbone"):
        prev = None
        for name in man.chains[chain]:
            inp = x if prev is None else out[prev]
            probes.append(_graph_probe(router, name, inp))
            prev = name
    for e in man.exits.values():
        at = next(n for n in man.chains[e.chain] if router.graphs[n].info.position == e.position)
        logits = out[at]
        if e.graph is not None:
            probes.append(_graph_probe(router, e.graph, out[at]))
            logits = router.graphs[e.graph](out[at])
        cut = float32_cut(float(np.median(exit_scores(logits, score)[0])))
        probes.append(Probe(f"step:{e.name}", "step", _onnx_step(out[at], logits, cut, score), exit=e.name))
    final = out[man.chains["backbone"][-1]]
    probes.append(Probe("finish", "finish", lambda n: (lambda: exit_scores(final[:n], score))))

    def collect(n: int) -> Thunk:
        return lambda: RouteResult(np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.float32),
                                   np.empty(n, np.float64), 1.0)
    probes.append(Probe("collect", "collect", collect))
    base = man.base
    if base is not None:
        probes.append(Probe("base", "base", lambda n: _run(router.graphs[base], x[:n])))
    else:
        chain = [router.graphs[n] for n in man.chains["backbone"]]
        probes.append(Probe("base", "base", lambda n: _run_chain(chain, x[:n])))
    return probes


def _graph_probe(router: Any, name: str, inp: np.ndarray) -> Probe:
    graph = router.graphs[name]
    return Probe(name, "graph", lambda n: _run(graph, np.ascontiguousarray(inp[:n])), units=tuple(graph.info.units))


def _run(graph: Any, x: np.ndarray) -> Thunk:
    return lambda: graph(x)


def _run_chain(graphs: list[Any], x: np.ndarray) -> Thunk:
    def run() -> Any:
        h = x
        for g in graphs:
            h = g(h)
        return h
    return run


def _onnx_step(state: np.ndarray, logits: np.ndarray, cut: float, score: str) -> Callable[[int], Thunk]:
    """What ``BundleRouter.run`` does at an enabled exit after the head, on ``n`` rows."""
    from bundle.router import exit_scores

    def make(n: int) -> Thunk:
        h, z = np.ascontiguousarray(state[:n]), np.ascontiguousarray(logits[:n])
        preds, scores = np.empty(n, np.int64), np.empty(n, np.float32)

        def step() -> Any:
            s, p = exit_scores(z, score)
            leave = s > cut
            preds[leave], scores[leave] = p[leave], s[leave]
            keep = ~leave
            return np.flatnonzero(keep), h[keep]
        return step
    return make
