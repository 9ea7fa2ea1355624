"""The probe: one pass through a plan's steps that proves the cut exact and describes every boundary.

``probe_plan(model, plan, input_size)`` runs the steps on a seeded random image and, unless told
not to (``exact=False``), compares the last step's output with ``model(x)`` on the same batch: they must
be bit-identical (``torch.equal``), else ``InexactPlanError`` names the model and the difference. For a
stateful plan (the generic plan) it runs the steps once more on a batch of 2 (the same image and one
more) to learn how every value a boundary hands over carries the batch (``StateSpec``): a constant
must not change at all; a tensor may carry it along one dimension, batch-major, possibly folded (k
entries per sample), and its first samples' entries must match; an int may count it (a carried
``B``). Anything else is refused, since exited rows could not be dropped from it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .errors import InexactPlanError, UnsupportedModelError
from .segments import BackbonePlan
from .state import TENSOR_STATE, BatchLeaf, State, StateSpec

__all__ = ["Probe", "probe_plan", "probe_input"]

PROBE_SEED = 0


@dataclass
class Probe:
    """Per step of the plan (execution order): the state it returned for the probe batch and its layout."""

    states: list[State]
    specs: list[StateSpec]

    @property
    def output(self) -> Any:
        return self.states[-1]

    def streams(self) -> list[torch.Tensor]:
        """What heads read after every step but the tail."""
        return [spec.stream(state) for spec, state in zip(self.specs[:-1], self.states[:-1], strict=True)]


def probe_input(plan: BackbonePlan, input_size: Sequence[int], batch_size: int, seed: int = PROBE_SEED) -> torch.Tensor:
    """A seeded standard-normal batch ``(batch_size, *input_size)`` on the device, in the float dtype, of
    the plan's first parameter."""
    device, dtype = torch.device("cpu"), torch.float32
    for step in plan.steps:
        p = next((p for m in step.modules for p in m.parameters()), None)
        if p is not None:
            device, dtype = p.device, (p.dtype if p.is_floating_point() else dtype)
            break
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, *input_size, generator=gen).to(device=device, dtype=dtype)


def _run(plan: BackbonePlan, x: torch.Tensor, name: str) -> list[State]:
    states, h = [], x
    for step in plan.steps:
        try:
            h = step.fn(h)
        except Exception as exc:  # the model refuses this input (size, channels): one line
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise UnsupportedModelError(f"{name}: step {step.name!r} fails on an input of size "
                                        f"{tuple(x.shape[1:])} ({type(exc).__name__}: {reason})") from None
        states.append(h)
    return states


def _check_exact(model: nn.Module, x: torch.Tensor, out: Any, name: str, family: str) -> None:
    ref = model(x)
    if isinstance(ref, torch.Tensor) and isinstance(out, torch.Tensor) and ref.shape == out.shape:
        if torch.equal(ref, out):
            return
        diff = (ref.float() - out.float()).abs().max().item()
        raise InexactPlanError(f"{name}: the {family} plan's steps differ from the model's forward "
                               f"(max abs difference {diff:.3g} on the probe batch); the cut is not exact")
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    ref_shape = tuple(ref.shape) if isinstance(ref, torch.Tensor) else type(ref).__name__
    raise InexactPlanError(f"{name}: the {family} plan's steps return {shape}, the model's forward {ref_shape}")


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if not a.is_floating_point():
        return torch.equal(a, b)
    scale = float(a.abs().max()) if a.numel() else 0.0
    return torch.allclose(a, b, rtol=1e-3, atol=1e-4 * max(scale, 1.0))


_NOT_BATCH = "changes with the batch size other than along one batch-major dimension or as a batch count"
_MIXES = ("takes other values for the same sample when another sample joins the batch (the model mixes samples), "
          "so dropping exited rows would change the others' results")


def _batch_leaf(a: Any, b: Any, na: int, nb: int) -> tuple[BatchLeaf | None, str | None]:
    """(how, problem) for one leaf seen at batch sizes ``na`` and ``nb`` (the second batch starts with the
    first): a constant (None) must not change; a batch-carrying tensor changes along one dimension only,
    by the same factor per sample, and its first ``na`` samples' entries match; an int may count the batch."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape == b.shape:
            return None, None if a.dtype == b.dtype and torch.equal(a, b) else _MIXES
        dims = [d for d in range(a.ndim) if a.ndim == b.ndim and a.shape[d] != b.shape[d]]
        if len(dims) != 1 or a.shape[dims[0]] % na or b.shape[dims[0]] != a.shape[dims[0]] // na * nb:
            return None, _NOT_BATCH
        d, k = dims[0], a.shape[dims[0]] // na
        return BatchLeaf(d, k), None if _close(a, b.narrow(d, 0, k * na)) else _MIXES
    if isinstance(a, bool) or isinstance(b, bool) or not (isinstance(a, int) and isinstance(b, int)):
        try:
            same = type(a) is type(b) and bool(a == b)
        except Exception:  # a value that cannot be compared: not provably constant
            same = False
        return None, None if same else _NOT_BATCH
    if a == b:
        return None, None
    k = a // na
    return BatchLeaf(None, k), None if a == k * na and b == k * nb and k > 0 else _NOT_BATCH


def _spec(step: str, sa: State, sb: State, na: int, nb: int, name: str) -> StateSpec:
    la, tree_a = pytree.tree_flatten(sa)
    lb, tree_b = pytree.tree_flatten(sb)
    if tree_a != tree_b:
        raise UnsupportedModelError(f"{name}: what crosses the boundary after {step!r} changes structure with the "
                                    "batch size")
    leaves = []
    for a, b in zip(la, lb, strict=True):
        how, problem = _batch_leaf(a, b, na, nb)
        if problem is not None:
            what = f"a tensor of shape {tuple(a.shape)}" if isinstance(a, torch.Tensor) else f"the value {a!r}"
            raise UnsupportedModelError(f"{name}: {what} crossing the boundary after {step!r} {problem}")
        leaves.append(how)
    stream = next((i for i, how in enumerate(leaves) if how == BatchLeaf(0, 1)), None)
    if stream is None:
        raise UnsupportedModelError(f"{name}: the output of {step!r} is not a batch-first tensor that heads can read")
    if isinstance(sa, torch.Tensor):
        return TENSOR_STATE
    return StateSpec(tuple(leaves), stream)


@torch.no_grad()
def probe_plan(model: nn.Module, plan: BackbonePlan, input_size: Sequence[int], *, name: str | None = None,
               exact: bool = True) -> Probe:
    """Run ``plan`` once (eval mode), check it against ``model(x)`` unless ``exact=False``, and describe
    every boundary; see the module docstring. ``name`` names the model in messages."""
    name = name or type(model).__name__
    was_training = model.training
    model.eval()
    try:
        x = probe_input(plan, input_size, 1)
        states = _run(plan, x, name)
        if exact and len(plan.steps) > 1:
            _check_exact(model, x, states[-1], name, plan.family)
        if not plan.stateful:
            return Probe(states, [TENSOR_STATE] * len(states))
        x2 = torch.cat([x, probe_input(plan, input_size, 1, seed=PROBE_SEED + 1)])
        other = _run(plan, x2, name)
        specs = [_spec(step.name, a, b, 1, 2, name) for step, a, b in zip(plan.steps[:-1], states, other, strict=False)]
        return Probe(states, [*specs, TENSOR_STATE])
    finally:
        model.train(was_training)
