"""What a backbone hands from one segment to the next: one tensor, or a tuple of values.

Per-class plans pass one tensor, the *stream* (batch first) that heads read. The generic plan
(``exits/generic_plan.py``) may pass a tuple: its first item holds the stream (the block's output), the
rest are whatever else the forward still needs after the boundary (a skip connection, class tokens, a
cached positional term, other branches, a spatial size). A ``StateSpec`` says how each leaf of that
tuple (in ``torch.utils._pytree`` order) carries the batch (``BatchLeaf``), or that it is a constant
(None), so that the runtime can drop the rows that exited from every batch-carrying leaf and from
nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree

__all__ = ["State", "BatchLeaf", "StateSpec", "TENSOR_STATE"]

State = Any
"""A ``torch.Tensor`` (the stream itself) or a tuple whose first tensor leaf is the stream."""


@dataclass(frozen=True)
class BatchLeaf:
    """How a leaf carries the batch: a tensor along ``dim`` with ``factor`` consecutive entries per sample
    (1: one row per sample; k: the batch folded batch-major with k entries each), or, with ``dim`` None,
    an int equal to ``factor`` x the batch size (a carried ``B`` or ``B * heads``)."""

    dim: int | None = 0
    factor: int = 1

    def select(self, leaf: Any, rows: torch.Tensor) -> Any:
        if self.dim is None:
            return self.factor * rows.numel()
        if self.factor == 1:
            return leaf.index_select(self.dim, rows)
        d = self.dim
        return leaf.unflatten(d, (-1, self.factor)).index_select(d, rows).flatten(d, d + 1)

    def describe(self) -> str:
        if self.dim is None:
            return "batch size" if self.factor == 1 else f"{self.factor} x batch size"
        return f"batch@{self.dim}" + (f"x{self.factor}" if self.factor != 1 else "")


@dataclass(frozen=True)
class StateSpec:
    """Layout of a state: ``leaves[i]`` says how pytree leaf i carries the batch (None: a constant) and
    ``stream_leaf`` which leaf heads read. ``leaves is None`` means a bare tensor, batch first (the state
    is the stream)."""

    leaves: tuple[BatchLeaf | None, ...] | None = None
    stream_leaf: int = 0

    @property
    def is_tensor(self) -> bool:
        return self.leaves is None

    def stream(self, state: State) -> torch.Tensor:
        """The tensor heads read, ``(B, ...)``."""
        if self.leaves is None:
            return state
        return pytree.tree_leaves(state)[self.stream_leaf]

    def select(self, state: State, rows: torch.Tensor) -> State:
        """The state of the batch rows ``rows`` (int64 indices): every batch-carrying leaf is index-selected
        (a carried batch size recounted); constants pass unchanged."""
        if self.leaves is None:
            return state.index_select(0, rows)
        values, tree = pytree.tree_flatten(state)
        out = [v if how is None else how.select(v, rows) for v, how in zip(values, self.leaves, strict=True)]
        return pytree.tree_unflatten(out, tree)

    def dense(self, state: State) -> State:
        """``state`` with each batch-carrying tensor dense in memory (contiguous, or channels-last for a 4-D one): a
        view's layout, such as a ViT patch embedding's ``flatten(2).transpose(1, 2)``, which every residual add after
        it keeps, is copied once into rows. The runtime hands every stage's state on this way, so a segment runs on
        the same layout whether or not rows were compacted before it (an ``index_select`` writes dense rows; on the
        demo's ViT a block ran 7-10% faster on them)."""
        if self.leaves is None:
            return _dense(state)
        values, tree = pytree.tree_flatten(state)
        out = [v if how is None or not isinstance(v, torch.Tensor) else _dense(v)
               for v, how in zip(values, self.leaves, strict=True)]
        return pytree.tree_unflatten(out, tree)

    def concat(self, states: list[State]) -> State:
        """States of the same layout stacked along the batch (batch-carrying leaves concatenated, carried batch sizes
        added, constants taken from the first): the inverse of :meth:`select` over a split batch."""
        if self.leaves is None:
            return torch.cat(states)
        flat = [pytree.tree_flatten(s)[0] for s in states]
        tree = pytree.tree_flatten(states[0])[1]
        out = []
        for i, how in enumerate(self.leaves):
            values = [f[i] for f in flat]
            if how is None:
                out.append(values[0])
            elif how.dim is None:
                out.append(sum(values))
            else:
                out.append(torch.cat(values, dim=how.dim))
        return pytree.tree_unflatten(out, tree)

    def describe(self) -> str:
        """``'tensor'`` or e.g. ``'3 leaves: stream, batch@0, constant'`` for messages and reports."""
        if self.leaves is None:
            return "tensor"
        parts = ["stream" if i == self.stream_leaf else ("constant" if how is None else how.describe())
                 for i, how in enumerate(self.leaves)]
        return f"{len(parts)} leaves: {', '.join(parts)}"


TENSOR_STATE = StateSpec()


def _dense(t: torch.Tensor) -> torch.Tensor:
    if t.is_contiguous() or (t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last)):
        return t
    return t.contiguous()
