"""How a configuration runs, whatever runs the graphs: the one compaction loop of ``exits.ExitRuntime`` (torch)
and ``bundle.BundleRouter`` (onnxruntime), with or without re-batching.

A configuration is a list of :class:`Stage`: the units (segments or graphs) between two enabled exits, then that
exit's head and its rule; the last stage ends at the final exit, where every sample still present leaves. A backend
(:class:`Backend`) runs one stage on a batch and gives back the state that goes on, the scores and the top-1
predictions (numpy, computed by the rule as the cache stores its inputs); this module decides who leaves with the
rule's one leave test, records them, and index-selects the rest (compaction) for the next stage.

**Partner rules** (``agree``, ``ensemble``: :func:`contract.rules.partner_exit`): a stage whose exit is the next
stage's partner (``Stage.hand_on > 0``) hands its top-k ``(ids, probs)`` on, a per-row numpy payload that follows
its rows through compaction and re-batching to the next stage's ``advance``; a partner that is not enabled runs
inside the deciding stage (the backend's units, its MACs in ``Stage.cost``). Without partner rules nothing is
carried.

**Plain compaction** (:func:`route` with ``rebatch=False``): each input batch runs alone; later stages see the
batch's survivors only (small batches). **Re-batching** (``rebatch=True``, the way the E3 and DREX servers serve):
the survivors of several input batches wait before each stage until ``batch_size`` of them are there, so every stage
runs full batches; what is left runs when the input ends. Results come back per input row, in input order, the same
decisions either way (each row's scores do not depend on the rows beside it, up to a kernel's last bits). A batch of
one row under plain compaction runs the stages straight through until it leaves (nothing to compact).
**Data-parallel** (:func:`route_parallel`): several worker threads, each taking the next input batch when it is free
and running its batches as above.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from itertools import accumulate, chain
from threading import Lock
from typing import Any, Protocol

import numpy as np

from .rules import ExitRule, get_rule

__all__ = [
    "Stage",
    "Backend",
    "Routed",
    "route",
    "route_one",
    "route_parallel",
    "check_batching",
    "Payload",
    "restarted",
    "final_rule",
]

Payload = tuple[np.ndarray, np.ndarray]
"""A partner's top-k ``(ids (n, k) int64, probs (n, k) float32)`` for the rows of a batch, as the cache stores them."""


@dataclass(frozen=True)
class Stage:
    """The units run between two enabled exits, then the exit's scoring.

    ``exit``: the cache exit index its leavers are recorded at; ``threshold`` None for the final exit (everyone
    leaves); ``cost``: what the stage charges each row it runs on (MACs); ``restart``: the stage starts from the
    input rows (the backbone after a saver chain) instead of the previous stage's state; ``units``: backend-specific
    (the segments or graphs, the head, a partner head run here); ``hand_on``: the width of the top-k this stage
    hands the next one, whose partner its exit is (0: none)."""

    exit: int
    threshold: float | None
    rule: ExitRule
    cost: float
    restart: bool = False
    units: Any = None
    hand_on: int = 0


def restarted(stage: Stage) -> Stage:
    """``stage`` starting from the input rows (the first backbone stage after a saver chain)."""
    return replace(stage, restart=True)


def final_rule(rule: ExitRule) -> ExitRule:
    """The rule a final stage scores with: ``rule``, or ``max_prob`` in place of one reading a partner (the final
    exit has none; its score is never compared)."""
    return get_rule("max_prob") if "partner" in rule.reads else rule


class Backend(Protocol):
    """What the loop needs from a runtime: states are opaque (a tensor, a tuple of tensors, an array)."""

    def advance(
        self, stage: Stage, state: Any, partner: Payload | None
    ) -> tuple[Any, np.ndarray, np.ndarray, Payload | None]:
        """Run ``stage`` on ``state`` (its input): the state after its units, scores ``(n,)`` float32, top-1
        predictions ``(n,)`` int64 and, when ``stage.hand_on``, its exit's top-``hand_on`` for the next stage.
        ``partner``: what the previous stage handed on for these rows (None: nothing)."""

    def take(self, stage: Stage | None, state: Any, rows: np.ndarray) -> Any:
        """The rows ``rows`` (int64) of ``state``, the output of ``stage`` (None: input rows)."""

    def concat(self, stage: Stage | None, states: list[Any]) -> Any:
        """States of ``stage``'s output (None: input rows) stacked along the batch."""


@dataclass
class Routed:
    """Per input row, in input order: ``predictions`` int64, ``exits`` int64 (cache exit index), ``scores`` float32 at
    the exit it left, ``costs`` float64 (MACs) spent on it."""

    predictions: np.ndarray
    exits: np.ndarray
    scores: np.ndarray
    costs: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Routed:
        return cls(
            np.empty(n, np.int64),
            np.empty(n, np.int64),
            np.empty(n, np.float32),
            np.empty(n, np.float64),
        )

    def grow(self, n: int) -> None:
        """Room for at least ``n`` rows (doubling)."""
        if n > len(self.exits):
            size = max(n, 2 * len(self.exits))
            for f in _ROUTED_FIELDS:
                old = getattr(self, f)
                new = np.empty(size, old.dtype)
                new[: len(old)] = old
                setattr(self, f, new)

    def cut(self, n: int) -> Routed:
        return Routed(*(getattr(self, f)[:n] for f in _ROUTED_FIELDS))

    def put(self, rows: np.ndarray, other: Routed) -> None:
        """``other``'s rows, in order, at rows ``rows`` of this one."""
        for f in _ROUTED_FIELDS:
            getattr(self, f)[rows] = getattr(other, f)


_ROUTED_FIELDS = ("predictions", "exits", "scores", "costs")


@dataclass
class _Waiting:
    """Rows waiting before a stage: their state, their input rows (kept while a later stage restarts from the
    input), their input row ids and what the stage before handed on for them (None: nothing)."""

    state: Any
    inputs: Any
    ids: np.ndarray
    partner: Payload | None = None


class _Loop:
    def __init__(self, stages: list[Stage], backend: Backend, out: Routed):
        self.stages, self.backend, self.out = stages, backend, out
        self.spent = list(accumulate(s.cost for s in stages))
        # whether stage k's rows must keep their input rows (a stage after k restarts from the input)
        self.keep_inputs, later = [False] * len(stages), False
        for k in range(len(stages) - 1, -1, -1):
            self.keep_inputs[k], later = later, later or stages[k].restart
        self.waiting: list[list[_Waiting]] = [[] for _ in stages]

    def push(self, k: int, item: _Waiting) -> None:
        self.waiting[k].append(item)

    def drain(self, batch_size: int | None, flush: bool) -> None:
        """Run every stage, in order, on batches of ``batch_size`` of its waiting rows (None: all of them at once);
        a smaller rest waits unless ``flush``."""
        for k in range(len(self.stages)):
            while self.waiting[k]:
                n = sum(len(w.ids) for w in self.waiting[k])
                if batch_size is not None and n < batch_size and not flush:
                    break
                self.step(k, self._next(k, min(n, batch_size or n)))

    def _next(self, k: int, size: int) -> _Waiting:
        """``size`` waiting rows of stage ``k`` (the earliest first) as one batch."""
        queue, parts, n = self.waiting[k], [], 0
        while queue and n < size:
            w = queue.pop(0)
            if n + len(w.ids) > size:  # split: the tail waits on
                head, tail = np.arange(size - n), np.arange(size - n, len(w.ids))
                queue.insert(0, self._rows(k, w, tail))
                w = self._rows(k, w, head)
            parts.append(w)
            n += len(w.ids)
        if len(parts) == 1:
            return parts[0]
        src = self._source(k)
        inputs = (
            None
            if parts[0].inputs is None
            else self.backend.concat(None, [p.inputs for p in parts])
        )
        partner: Payload | None = None
        if parts[0].partner is not None:
            given = [p.partner for p in parts if p.partner is not None]
            partner = (np.concatenate([g[0] for g in given]), np.concatenate([g[1] for g in given]))
        return _Waiting(
            self.backend.concat(src, [p.state for p in parts]),
            inputs,
            np.concatenate([p.ids for p in parts]),
            partner,
        )

    def _source(self, k: int) -> Stage | None:
        """The stage whose output stage ``k`` reads (None: the input rows)."""
        return None if k == 0 or self.stages[k].restart else self.stages[k - 1]

    def _rows(self, k: int, w: _Waiting, rows: np.ndarray) -> _Waiting:
        inputs = None if w.inputs is None else self.backend.take(None, w.inputs, rows)
        return _Waiting(
            self.backend.take(self._source(k), w.state, rows),
            inputs,
            w.ids[rows],
            _rows_of(w.partner, rows),
        )

    def one(self, x: Any, row: int) -> None:
        """A one-row batch under plain compaction (:func:`_one_row`)."""
        _one_row(self.stages, self.backend, x, self.out, row)

    def step(self, k: int, w: _Waiting) -> None:
        """Run stage ``k`` on ``w``: record the rows that leave, hand the others to stage ``k + 1``."""
        stage, out = self.stages[k], self.out
        state, scores, preds, hand = self.backend.advance(stage, w.state, w.partner)
        if stage.threshold is None:
            leave = None
        else:
            leave = stage.rule.leaves(scores, stage.threshold)
            if leave.all():
                leave = None
        ids = w.ids if leave is None else w.ids[leave]
        if len(ids):
            out.predictions[ids] = preds if leave is None else preds[leave]
            out.scores[ids] = scores if leave is None else scores[leave]
            out.exits[ids] = stage.exit
            out.costs[ids] = self.spent[k]
        if leave is None:
            return
        keep = np.flatnonzero(~leave)
        nxt = self.stages[k + 1]
        inputs = None
        if self.keep_inputs[k + 1] or nxt.restart:
            inputs = self.backend.take(None, w.inputs, keep)
        if nxt.restart:
            state = inputs
        elif len(keep) < len(w.ids):
            state = self.backend.take(stage, state, keep)
        self.push(
            k + 1,
            _Waiting(
                state,
                inputs if self.keep_inputs[k + 1] else None,
                w.ids[keep],
                _rows_of(hand, keep),
            ),
        )


def _one_row(stages: list[Stage], backend: Backend, x: Any, out: Routed, row: int) -> None:
    """Row ``row`` of ``out`` from a one-row batch ``x`` under plain compaction: nothing to compact, so the stages
    run straight through until the row leaves; the decisions of :meth:`_Loop.step` without its bookkeeping
    (batch-1 serving pays it at every exit)."""
    state, partner, spent = x, None, 0.0
    for stage in stages:
        spent += stage.cost
        if stage.restart:
            state = x
        state, scores, preds, hand = backend.advance(stage, state, partner)
        if stage.threshold is None or stage.rule.leaves(scores, stage.threshold)[0]:
            out.predictions[row], out.scores[row] = preds[0], scores[0]
            out.exits[row], out.costs[row] = stage.exit, spent
            return
        partner = hand


def route_one(stages: list[Stage], backend: Backend, x: Any) -> Routed:
    """:func:`route` of the one batch ``x`` of one row under plain compaction, without the loop's set-up (online
    serving at batch 1 calls this for every request)."""
    out = Routed.empty(1)
    _one_row(stages, backend, x, out, 0)
    return out


def check_batching(batch_size: Any, workers: Any, error: type[Exception]) -> None:
    """``error`` (one line) unless ``batch_size`` is None or an integer >= 1 and ``workers`` an integer >= 1: the
    runtime's and the router's ``run_batches`` check their options with it."""
    checked = (
        [("workers", workers)]
        if batch_size is None
        else [("batch_size", batch_size), ("workers", workers)]
    )
    for name, value in checked:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise error(f"{name} must be an integer >= 1 (got {value!r})")


def route_parallel(
    stages: list[Stage],
    backend: Backend,
    batches: Iterable[Any],
    workers: int,
    *,
    rebatch: bool = False,
    batch_size: int | None = None,
    context: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> Routed:
    """:func:`route` of ``batches`` on ``workers`` threads, each taking the next batch of the stream whenever it is
    free (its own stream, re-batched within it when ``rebatch``, ``batch_size`` defaulting to the first batch's
    size); results in input order, the same decisions. Data-parallel throughput serving: each worker should run one
    intra-op thread (the kernels release the GIL; the loop's steps take it). ``context``: entered by each worker
    around its run (a thread-local mode the caller's thread is in)."""
    source = iter(batches)
    if rebatch and batch_size is None:
        first = next(source, None)
        if first is None:
            return Routed.empty(0)
        batch_size, source = len(first), chain([first], source)
    lock = Lock()
    spans: list[tuple[int, int]] = []  # (first row, rows) of every batch taken, in input order

    def pull(mine: list[int]) -> Iterator[Any]:
        while True:
            with lock:
                b = next(source, None)
                if b is None:
                    return
                mine.append(len(spans))
                spans.append((spans[-1][0] + spans[-1][1] if spans else 0, len(b)))
            yield b

    def run(_: int) -> tuple[list[int], Routed]:
        mine: list[int] = []
        with context():
            got = route(stages, backend, pull(mine), rebatch=rebatch, batch_size=batch_size)
        return mine, got

    with ThreadPoolExecutor(workers) as pool:
        done = list(pool.map(run, range(workers)))
    out = Routed.empty(spans[-1][0] + spans[-1][1] if spans else 0)
    for mine, got in done:
        if mine:
            out.put(
                np.concatenate([np.arange(spans[i][0], spans[i][0] + spans[i][1]) for i in mine]),
                got,
            )
    return out


def _rows_of(payload: Payload | None, rows: np.ndarray) -> Payload | None:
    return None if payload is None else (payload[0][rows], payload[1][rows])


def route(
    stages: list[Stage],
    backend: Backend,
    batches: Iterable[Any],
    *,
    rebatch: bool = False,
    batch_size: int | None = None,
    n_rows: int | None = None,
) -> Routed:
    """Run input batches through ``stages`` (see the module docstring); results in input order.

    ``batches`` yields input states (each with ``len``); ``rebatch``: stages wait for ``batch_size`` rows (default
    the first batch's size); ``n_rows``: the total when known (the output is allocated once).
    """
    out = Routed.empty(n_rows or 0)
    loop = _Loop(stages, backend, out)
    keep_first = loop.keep_inputs[0] or stages[0].restart
    offset = 0
    for x in batches:
        n = len(x)
        if n == 0:
            continue
        if rebatch and batch_size is None:
            batch_size = n
        out.grow(offset + n)
        if n == 1 and not rebatch:
            loop.one(x, offset)
            offset += 1
            continue
        loop.push(0, _Waiting(x, x if keep_first else None, np.arange(offset, offset + n)))
        offset += n
        loop.drain(batch_size if rebatch else None, flush=not rebatch)
    loop.drain(batch_size if rebatch else None, flush=True)
    return out if len(out.exits) == offset else out.cut(offset)
