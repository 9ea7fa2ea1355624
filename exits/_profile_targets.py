"""What ``python -m exits.profile`` times on each runtime: every unit (or bundle graph), the base model and the
runtime's own steps, each as ``make(n) -> thunk`` that runs the thing once on ``n`` rows of prepared inputs.

Inputs are random images at the model's input size, run once through the whole model at the largest batch
size; each unit then gets the first ``n`` rows of what it really reads there (its source's output state, a
head the stream), so every call does exactly the work of the runtime on an ``n``-row batch. A step is what the
runtime does at an enabled exit besides the head: scores, the threshold test, the split into leaving and staying
rows and the compaction of the state that goes on; its threshold is the median score, so half the rows leave.

Probes come in execution order (each head and its step after the unit they read), which is the order
``exits.profile.measure`` runs them in, one call each per sweep; each call reads what the call before it in the
sweep wrote (a :class:`Slots` per row count, filled with the prepared inputs at first), so a unit's input is
fresh in the caches as in a run, while its weights are not. Two are timed alone, in consecutive calls: the
base model (as the validations time it), and the run without early exits, whose difference less the final
scoring is the runtime's own per-batch cost (``collect``: input checks, the loop, the result).
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
    alone: bool = False  # timed in consecutive calls of its own, not inside the sweep
    # also timed right after a call of each paired probe (its ``after``, by that probe's exit): a mixed stream
    paired: bool = False
    # what the table keeps, from the round's times by name (same n): e.g. a whole run less the work inside it
    derive: Callable[[dict[str, float]], float] | None = None


class Slots(dict):
    """Per row count ``n``: the latest output of every unit in the sweep, by unit name (None: the input rows),
    filled at first with the first ``n`` rows of the prepared outputs."""

    def __init__(self, fill: Callable[[int], dict]):
        super().__init__()
        self.fill = fill

    def __missing__(self, n: int) -> dict:
        self[n] = self.fill(n)
        return self[n]


# -- the eager runtime (exits.runtime.ExitRuntime) ---------------------------------------------
def eager_probes(runtime: Any, batch_size: int, score: str, *, seed: int = 0) -> list[Probe]:
    """Probes of an ``ExitRuntime``'s model on ``runtime.device``: units in execution order with each head's
    step after it, the final scoring, the run's per-batch cost, the base."""
    from .runtime import exit_scores

    model, device = runtime.model, runtime.device
    g = torch.Generator().manual_seed(seed)
    x = runtime._input(torch.randn(batch_size, *model.input_size, generator=g))
    outputs: dict[str | None, Any] = {None: x}
    segments = {s.name: s for s in (*model.saver_segments, *model.segments)}
    by_position = {s.position: s for s in segments.values()}
    with torch.inference_mode():
        for segs in (model.saver_segments, model.segments):
            h = x
            for seg in segs:
                h = outputs[seg.name] = seg(h)
        for spec in model.exits[:-1]:
            if spec.key is not None:
                seg = by_position[spec.position]
                outputs[f"head:{spec.name}"] = model.heads[spec.key](seg.stream(outputs[seg.name]))

    def fill(n: int) -> dict:
        rows = torch.arange(n, device=device)
        return {name: value[:n] if name is None or name.startswith("head:") else segments[name].select(value, rows)
                for name, value in outputs.items()}
    live = Slots(fill)

    steps: dict[str, list[Probe]] = {}  # the unit each step follows: its head, or its segment
    for spec in model.exits[:-1]:
        seg = by_position[spec.position]
        after = seg.name if spec.key is None else f"head:{spec.name}"
        cut = float(exit_scores(outputs[after], score)[0].float().median())
        steps.setdefault(after, []).append(Probe(f"step:{spec.name}", "step",
                                                 _eager_step(live, seg, after, cut, score), exit=spec.name))
    probes = []
    for unit in model.units:
        def make(n: int, unit=unit) -> Thunk:
            S, fn, source = live[n], unit.module, unit.source
            if unit.kind == "head":
                seg = segments[source]
                return lambda: S.__setitem__(unit.name, fn(seg.stream(S[source])))
            if unit.name in segments:  # handed on dense, as the runtime's stages hand it on
                dense = segments[unit.name].out_spec.dense
                return lambda: S.__setitem__(unit.name, dense(fn(S[source])))
            return lambda: S.__setitem__(unit.name, fn(S[source]))
        probes.append(Probe(unit.name, unit.kind, make, units=(unit.name,)))
        probes += steps.get(unit.name, [])
    final = model.segments[-1].name
    probes.append(Probe("finish", "finish", lambda n: (lambda: exit_scores(live[n][final], score))))
    # the run without early exits, less the base model and the final scoring: the runtime's per-batch cost
    probes.append(Probe("collect", "collect", lambda n: (lambda: runtime.run(x[:n], runtime.base_config)),
                        alone=True, derive=lambda t: t["collect"] - t["base"] - t["finish"]))
    probes.append(Probe("base", "base", lambda n: (lambda: runtime.base_forward(x[:n])), alone=True))
    return probes


def _eager_step(live: Slots, seg: Any, logits: str, cut: float, score: str) -> Callable[[int], Thunk]:
    """What ``ExitRuntime.run`` does at an enabled exit after the head, on ``n`` rows (``contract.schedule``):
    scores on the host, the leave test, the leaving rows recorded, the compaction of the state that goes on (none
    for one row: the loop runs a one-row batch straight through)."""
    from contract import get_rule

    from ._runtime_stages import scores_numpy

    rule = get_rule(score)

    def make(n: int) -> Thunk:
        S, device = live[n], live[n][logits].device
        ids = np.arange(n)
        preds, scores = np.empty(n, np.int64), np.empty(n, np.float32)

        def step() -> Any:
            s, p = scores_numpy(S[logits], rule)
            leave = s > cut
            preds[ids[leave]], scores[ids[leave]] = p[leave], s[leave]
            keep = np.flatnonzero(~leave)
            t = torch.from_numpy(keep)
            return ids[keep], seg.select(S[seg.name], t if device.type == "cpu" else t.to(device))

        def one() -> Any:
            s, p = scores_numpy(S[logits], rule)
            if s[0] > cut:
                preds[0], scores[0] = p[0], s[0]
            return S[seg.name]
        return one if n == 1 else step
    return make


# -- the bundle router (bundle.BundleRouter) -----------------------------------------------------
def onnx_probes(router: Any, batch_size: int, score: str, *, seed: int = 0) -> list[Probe]:
    """Probes of a bundle router: every graph of its chains with each head graph and step after the graph it
    reads, the final scoring, the run's per-batch cost, the base. A fused exit's head runs inside its segment
    graph (timed with it); a graph that outputs scores writes them beside its state (slot ``name + "#exit"``), and
    the step reads them there, as the router does."""
    from bundle._stages import scores_of
    from contract import float32_cut, get_rule

    man = router.manifest
    rule = get_rule(score)

    def scored(out: list[np.ndarray]) -> Any:  # as the router scores a graph's outputs (imported once: timed calls)
        return scores_of(rule, out, None, 0)
    x = np.random.default_rng(seed).standard_normal((batch_size, *man.input_shape), dtype=np.float32)
    out: dict[str | None, Any] = {None: x}
    for chain in ("saver", "backbone"):
        h = x
        for name in man.chains[chain]:
            h = _write(out, name, router.graphs[name], h)
    live = Slots(lambda n: {name: _rows(v, n) for name, v in out.items()})  # filled at first use: every slot
    at_graph: dict[str, list[Probe]] = {}  # the head graphs and steps that follow each chain graph
    for e in man.exits.values():
        at = next(n for n in man.chains[e.chain] if router.graphs[n].info.position == e.position)
        logits = f"{at}#exit" if e.fused else at
        if e.graph is not None and not e.fused:
            _write(out, e.graph, router.graphs[e.graph], out[at])
            at_graph.setdefault(at, []).append(_graph_probe(router, live, e.graph, at))
            logits = f"{e.graph}#exit"
        cut = float32_cut(float(np.median(scored(out[logits])[0])))
        at_graph.setdefault(at, []).append(Probe(f"step:{e.name}", "step",
                                                 _onnx_step(live, at, logits, cut, scored), exit=e.name))
    probes = []
    for chain in ("saver", "backbone"):
        prev = None
        for name in man.chains[chain]:
            probes.append(_graph_probe(router, live, name, prev))
            probes += at_graph.get(name, [])
            prev = name
    final = f"{man.chains['backbone'][-1]}#exit"
    probes.append(Probe("finish", "finish", lambda n: (lambda: scored(live[n][final]))))
    # the base model as the validation times it (the router's run), and its graphs then the final scoring in one
    # call: the router's own per-batch cost is the difference (the final scoring timed where a run meets it, after
    # the base graph: at batch 1 it took twice its time in the sweep, which a difference would have charged to
    # every batch)
    graphs = [router.graphs[man.base]] if man.base is not None else [router.graphs[n] for n in man.chains["backbone"]]
    probes.append(Probe("collect", "collect", lambda n: _run_chain(graphs, x[:n], scored), alone=True,
                        derive=lambda t: t["base"] - t["collect"]))
    probes.append(Probe("base", "base", lambda n: (lambda: router.run(x[:n], router.base_config)), alone=True))
    return probes + _path_probes(router, x[:1])


def _path_probes(router: Any, x: np.ndarray) -> list[Probe]:
    """When the router answers one-image calls with the bundle's batch-1 graph (``exits/onnx_chain.py``): its whole
    call on one row that leaves at each of its stages in turn (thresholds 1 before the stage, 0 there, under
    ``max_prob``), each timed in calls of its own as a server answers image after image (inside the sweep, the
    other items' graphs would evict the weights a run of early leavers keeps warm: a configuration whose rows nearly
    all left at the first exit ran 9% faster than that predicted), and right after a call of each path (``paired``:
    a stream whose rows leave at different exits alternates paths, and a path after another ran slower than after
    itself); it serves one row, so every row count times that call."""
    from contract import ExitConfig

    man = router.manifest
    if not router.one_graph:  # no batch-1 graph, or this router found the graphs one by one faster
        return []
    fused = man.fused_exits
    names = [*(e.name for e in fused), man.final_exit[0]]
    def leaving_at(k: int) -> Callable[[int], Thunk]:
        cfg = ExitConfig(tuple(e.index for e in fused), (1.0,) * k + (0.0,) * (len(fused) - k), "max_prob")
        return lambda n: (lambda: router.run(x, cfg))
    return [Probe(f"path:{name}", "path", leaving_at(k), exit=name, alone=True, paired=True)
            for k, name in enumerate(names)]


def _outputs(graph: Any, h: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """A graph's state (what the next graph reads) and what an exit reads from it: ``[logits]``, or ``[logits,
    probs, ids]`` from a graph that scores (after the state, for a fused exit's segment graph)."""
    if not graph.info.scored:
        state = graph(h)
        return state, [state]
    outs = graph.outputs(h)
    return outs[0], outs[1:] if len(outs) == 4 else outs


def _write(slots: dict, name: str, graph: Any, h: np.ndarray) -> np.ndarray:
    state, slots[f"{name}#exit"] = _outputs(graph, h)
    slots[name] = state
    return state


def _rows(value: Any, n: int) -> Any:
    if isinstance(value, list):
        return [np.ascontiguousarray(v[:n]) for v in value]
    return np.ascontiguousarray(value[:n])


def _graph_probe(router: Any, live: Slots, name: str, source: str | None) -> Probe:
    """A graph run on what ``source`` (None: the input rows) last wrote, writing its own slots."""
    graph = router.graphs[name]

    def make(n: int) -> Thunk:
        S = live[n]
        return lambda: _write(S, name, graph, S[source])
    return Probe(name, "graph", make, units=tuple(graph.info.units))


def _run_chain(graphs: list[Any], x: np.ndarray, scored: Callable[[list[np.ndarray]], Any]) -> Thunk:
    """The graphs in order on ``x``, then the final exit's scoring of the last one's outputs, as one call."""
    def run() -> Any:
        h = x
        for g in graphs[:-1]:
            h = g(h)
        return scored(_outputs(graphs[-1], h)[1])
    return run


def _onnx_step(live: Slots, state: str, logits: str, cut: np.float32,
               scored: Callable[[list[np.ndarray]], Any]) -> Callable[[int], Thunk]:
    """What ``BundleRouter.run`` does at an enabled exit after its head, on ``n`` rows (for one row: no
    compaction)."""
    def make(n: int) -> Thunk:
        S = live[n]
        preds, scores = np.empty(n, np.int64), np.empty(n, np.float32)

        def step() -> Any:
            s, p, _ = scored(S[logits])
            leave = s > cut
            preds[leave], scores[leave] = p[leave], s[leave]
            keep = ~leave
            return np.flatnonzero(keep), S[state][keep]

        def one() -> Any:
            s, p, _ = scored(S[logits])
            if s[0] > cut:
                preds[0], scores[0] = p[0], s[0]
            return S[state]
        return one if n == 1 else step
    return make
