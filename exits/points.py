"""Exit points: where, in a backbone's execution order, an exit head may read features.

``resolve_point_names(plan, points)`` resolves ``"blocks"`` (after every block, as DyCE), ``"stages"``
(after every stage) or a list of module names into boundaries; ``discover_points`` turns them into a
validated list of ``ExitPoint`` records, sized from the probe's streams (``exits/probe.py``; never by
guessing). ``take_indices`` picks positions by index, as timm's
``feature_take_indices`` does.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import ExitsError, UnknownModuleError, UnsupportedModelError
from .segments import BackbonePlan

__all__ = ["ExitPoint", "LAYOUTS", "resolve_point_names", "discover_points", "stream_layout", "check_points",
           "take_indices"]

LAYOUTS = ("nchw", "nhwc", "nlc", "nc")


@dataclass(frozen=True)
class ExitPoint:
    """A position at which heads read the features the backbone hands to its next step.

    ``position`` is 0-based in execution order; ``module`` the name of the module that produced the
    features; ``num_chs`` their channels; ``reduction`` the input/feature stride (0 for flat ``nc``);
    ``layout`` one of ``nchw``, ``nhwc`` (channels last), ``nlc`` (tokens), ``nc`` (flat).
    """

    position: int
    module: str
    num_chs: int
    reduction: int
    layout: str
    num_prefix_tokens: int = 0


def resolve_point_names(plan: BackbonePlan, points: str | Sequence[str], *, model_name: str = "model",
                        module_names: set[str] | None = None) -> list[tuple[str, str]]:
    """``(step name, point name)`` pairs in execution order for ``"blocks"``, ``"stages"`` or a list
    of module names.

    A stage stands for the output of its last block and keeps the stage's name (``layer2``). Raises
    ``UnknownModuleError`` naming a module the model lacks, or one that is not a block boundary.
    """
    stage_ends = plan.stage_ends()
    if isinstance(points, str):
        if points == "blocks" or (points == "stages" and not stage_ends):
            return [(b, b) for b in plan.blocks]
        if points == "stages":
            return [(end, stage) for stage, end in stage_ends.items()]
        raise ExitsError(f"points={points!r}: expected 'blocks', 'stages' or a list of module names")
    order = {name: i for i, name in enumerate(plan.boundaries)}
    chosen: dict[str, str] = {}
    for name in points:
        step = stage_ends.get(name, name)
        if step not in order:
            if module_names is not None and name not in module_names:
                raise UnknownModuleError(f"{model_name} has no module {name!r}")
            examples = ", ".join(repr(n) for n in (plan.blocks[:2] + list(plan.stages[:1])))
            raise UnknownModuleError(
                f"module {name!r} of {model_name} is not a block boundary; name a block or stage such as {examples}")
        if step in chosen:
            raise ExitsError(f"points {chosen[step]!r} and {name!r} of {model_name} are the same position")
        chosen[step] = name
    return sorted(chosen.items(), key=lambda kv: order[kv[0]])


def stream_layout(plan: BackbonePlan, step: str, feat: torch.Tensor) -> str:
    """The layout of the stream after ``step``: the plan's, else from its rank; a 4-d stream is
    channels-last when the plan says so, unless ``plan.channels`` matches exactly one of its axes."""
    if plan.layout is not None:
        return plan.layout
    if feat.ndim == 4:
        chs = plan.channels.get(step)
        if chs is not None and (feat.shape[1] == chs) != (feat.shape[3] == chs):
            return "nchw" if feat.shape[1] == chs else "nhwc"
        return "nhwc" if plan.channels_last else "nchw"
    return {3: "nlc", 2: "nc"}.get(feat.ndim, f"rank-{feat.ndim}")


def _is_grid(n_tokens: int, input_hw: Sequence[int]) -> bool:
    """Whether ``n_tokens`` patch tokens can tile an image of ``input_hw`` with square patches."""
    if n_tokens < 1:
        return False
    side = math.sqrt(input_hw[0] * input_hw[1] / n_tokens)
    return round(input_hw[0] / side) * round(input_hw[1] / side) == n_tokens


def _prefix_tokens(plan: BackbonePlan, feat: torch.Tensor, input_hw: Sequence[int]) -> int:
    """Prefix (class, register) tokens ahead of the patch tokens: the plan's number; for a stateful
    (generic) plan, the smallest count up to 8 that leaves a patch grid, preferring the model's own."""
    n = feat.shape[1]
    if not plan.stateful:
        return plan.num_prefix_tokens if n > plan.num_prefix_tokens else 0
    for p in (plan.num_prefix_tokens, *range(9)):
        if _is_grid(n - p, input_hw):
            return p
    return 0


def _reduction(plan: BackbonePlan, layout: str, feat: torch.Tensor, input_hw: Sequence[int]) -> int:
    if layout == "nchw":
        return round(input_hw[0] / feat.shape[2])
    if layout == "nhwc":
        return round(input_hw[0] / feat.shape[1])
    if layout == "nlc":
        if plan.patch_size:
            return plan.patch_size
        n_tokens = max(feat.shape[1] - _prefix_tokens(plan, feat, input_hw), 1)
        return round(math.sqrt(input_hw[0] * input_hw[1] / n_tokens))
    return 0


def discover_points(plan: BackbonePlan, names: Sequence[tuple[str, str]], input_size: Sequence[int],
                    streams: Sequence[torch.Tensor], *, first_position: int = 0, model_name: str = "model"
                    ) -> list[ExitPoint]:
    """Checked ``ExitPoint`` records for ``(step name, point name)`` pairs from ``resolve_point_names``;
    ``streams[i]`` is what heads read after ``plan.steps[i]`` (``Probe.streams()``)."""
    by_name = {s.name: out for s, out in zip(plan.steps, streams, strict=False)}
    points = []
    for i, (step, name) in enumerate(names):
        feat = by_name[step]
        layout = stream_layout(plan, step, feat)
        if layout not in LAYOUTS:
            raise UnsupportedModelError(f"{model_name}: the output of {name!r} has shape {tuple(feat.shape)}; heads "
                                        f"read {', '.join(LAYOUTS)} features")
        num_chs = int(feat.shape[1] if layout == "nchw" else feat.shape[-1])
        points.append(ExitPoint(first_position + i, name, num_chs, _reduction(plan, layout, feat, input_size[1:]),
                                layout, _prefix_tokens(plan, feat, input_size[1:]) if layout == "nlc" else 0))
    check_points(points, increasing_reduction=not plan.stateful)
    return points


def check_points(points: Sequence[ExitPoint], *, increasing_reduction: bool = True) -> None:
    """Raise ``ExitsError`` unless positions increase, channels > 0, layouts are known and (unless told
    otherwise: a generic plan's stream may switch between branches) spatial reductions never decrease."""
    last_red = 0
    for i, p in enumerate(points):
        if p.layout not in LAYOUTS:
            raise ExitsError(f"exit point {p.module!r}: unsupported feature layout {p.layout!r} (expected {LAYOUTS})")
        if p.num_chs <= 0:
            raise ExitsError(f"exit point {p.module!r}: num_chs must be > 0 (got {p.num_chs})")
        if i and p.position <= points[i - 1].position:
            raise ExitsError(f"exit point {p.module!r}: positions must increase (got {p.position} after "
                             f"{points[i - 1].position})")
        if p.layout != "nc" and increasing_reduction:
            if p.reduction < last_red:
                raise ExitsError(f"exit point {p.module!r}: reduction {p.reduction} is below the previous {last_red}")
            last_red = p.reduction


def take_indices(n: int, indices: int | Sequence[int] | None = None) -> list[int]:
    """Absolute, checked indices into ``n`` items: None -> all, an int k -> the last k,
    a list -> those indices (negatives count from the end)."""
    if indices is None:
        return list(range(n))
    if isinstance(indices, int):
        if not 0 <= indices <= n:
            raise ExitsError(f"take_indices: the last {indices} of {n} positions is out of range")
        return list(range(n - indices, n))
    out = []
    for idx in indices:
        a = idx + n if idx < 0 else idx
        if not 0 <= a < n:
            raise ExitsError(f"take_indices: index {idx} is out of range for {n} positions")
        out.append(a)
    return out
