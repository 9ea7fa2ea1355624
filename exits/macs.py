"""Cost of every compute unit of an ``ExitModel``: MACs per sample, optional measured latency.

Convention: MACs = FLOPs / 2, FLOPs from ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
convolutions and attention; element-wise ops, norms and activations are not counted, as in the
MACs timm publishes). On CPU the fused attention kernel
(``aten._scaled_dot_product_flash_attention_for_cpu``) has no formula in the counter, so one is
registered here: q @ k^T and attn @ v, the same formula the counter uses for the CUDA kernels.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .measure import sync
from .model import ExitModel

__all__ = ["MACS_COUNTER", "ATTENTION_FORMULAS", "count_flops", "count_macs", "unit_macs", "measure_latency"]

MACS_COUNTER = "torch.utils.flop_counter.FlopCounterMode + fused-attention formula; MACs = FLOPs / 2"


def _sdpa_cpu_flops(query: Sequence[int], key: Sequence[int], value: Sequence[int], *args: Any,
                    out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of the fused CPU attention op, from the shapes of q, k, v (B, H, L, E)."""
    return sdpa_flop_count(query, key, value)


ATTENTION_FORMULAS: dict[Any, Callable[..., int]] = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
}


def count_flops(fn: Callable[..., Any], *args: Any) -> tuple[int, Any]:
    """FLOPs of one call ``fn(*args)`` (attention included) and its output; runs without grad."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=ATTENTION_FORMULAS) as counter:
        out = fn(*args)
    return int(counter.get_total_flops()), out


def count_macs(module: nn.Module, input_size: Sequence[int], *, batch_size: int = 1,
               device: torch.device | str | None = None) -> float:
    """MACs per sample of ``module`` on a zero input of ``input_size`` (C, H, W)."""
    x = torch.zeros(batch_size, *input_size, device=device)
    flops, _ = count_flops(module, x)
    return flops / 2 / batch_size


def _input(model: ExitModel, batch_size: int, fill: Callable[..., torch.Tensor]) -> torch.Tensor:
    """An input batch at ``model.input_size`` on the backbone's device, in its float dtype."""
    p = next(model.backbone.parameters())
    return fill(batch_size, *model.input_size, device=p.device, dtype=p.dtype if p.is_floating_point() else None)


def unit_macs(model: ExitModel, *, batch_size: int = 1) -> dict[str, float]:
    """MACs per sample of every unit of ``model`` (segments, heads at their positions, saver), by name.

    Each unit is counted on the real output of the unit that feeds it (a head on its stream), at
    ``model.input_size``.
    """
    was_training = model.training
    model.eval()
    outputs: dict[str | None, Any] = {None: _input(model, batch_size, torch.zeros)}
    macs: dict[str, float] = {}
    try:
        for unit in model.units:
            flops, outputs[unit.name] = count_flops(unit.module, model.unit_input(unit, outputs))
            macs[unit.name] = flops / 2 / batch_size
    finally:
        model.train(was_training)
    return macs


def measure_latency(model: ExitModel, batch_size: int = 1, device: torch.device | str | None = None, *,
                    warmup: int = 3, repeats: int = 10) -> dict[str, float]:
    """Measured seconds per sample of every unit (median over ``repeats`` calls at ``batch_size``).

    ``device`` defaults to the model's; when given, the model is moved there.
    """
    if device is not None:
        model.to(device)
    x = _input(model, batch_size, torch.randn)
    was_training = model.training
    model.eval()
    outputs: dict[str | None, Any] = {None: x}
    latency: dict[str, float] = {}
    try:
        with torch.inference_mode():
            for unit in model.units:
                inp = model.unit_input(unit, outputs)
                for _ in range(warmup):
                    unit.module(inp)
                times = []
                for _ in range(repeats):
                    sync(x.device)
                    t0 = time.perf_counter()
                    out = unit.module(inp)
                    sync(x.device)
                    times.append(time.perf_counter() - t0)
                outputs[unit.name] = out
                latency[unit.name] = statistics.median(times) / batch_size
    finally:
        model.train(was_training)
    return latency
