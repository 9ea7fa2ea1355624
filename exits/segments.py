"""Cut a backbone into explicit, ordered steps and group them into segments between exit points.

A *plan* lists what a model's ``forward`` runs, in order, using the model's own pieces: a stem, its
blocks (and any glue between them, such as a stage's downsample), and a tail (final norm and
``forward_head``). Nothing is patched: running every step in order is ``model(x)``, which the probe
(``exits/probe.py``) checks when exits are attached. Plans are registered per model class with
``@register_plan(cls)`` where they are faster or give better names; any ``nn.Sequential`` is a plan of
its own (every child a block, the last child the tail); every other model gets the generic plan
(``exits/generic_plan.py``), cut with torch.fx. A step maps a state to a state (``exits/state.py``):
one tensor for per-class plans, a tuple for generic steps that hand over more than the stream.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import cast

import torch
from torch import nn

from .state import TENSOR_STATE, State, StateSpec

__all__ = ["Step", "BackbonePlan", "Segment", "register_plan", "plan_for", "registered_plan", "whole_plan",
           "cut_segments"]

STEP_KINDS = ("stem", "block", "glue", "tail")


@dataclass(frozen=True)
class Step:
    """One piece of a forward pass: ``fn(state) -> state`` with the modules it runs.

    ``name`` is the module name whose output the step produces (``layer1.0``, ``stages.1.downsample``);
    the tail's name is ``head``. ``kind`` is one of ``stem``, ``block``, ``glue``, ``tail``.
    """

    name: str
    kind: str
    fn: Callable[[State], State]
    modules: tuple[nn.Module, ...]


@dataclass(frozen=True)
class BackbonePlan:
    """The ordered steps of a model, its stage module names and its feature layout.

    ``layout`` is ``nchw``, ``nhwc`` or ``nlc`` for every step but the tail, or None to infer it from
    each stream's rank (4: ``nhwc`` if ``channels_last`` else ``nchw``, corrected by ``channels``, the
    channel counts timm's ``feature_info`` gives for some steps; 3: nlc; 2: nc). ``stateful`` plans may
    hand more than one tensor from step to step; the probe finds which of them carry the batch.
    """

    family: str
    steps: tuple[Step, ...]
    stages: tuple[str, ...] = ()
    layout: str | None = None
    num_prefix_tokens: int = 0
    patch_size: int | None = None
    stateful: bool = False
    channels_last: bool = False
    channels: Mapping[str, int] = field(default_factory=dict)

    @property
    def boundaries(self) -> list[str]:
        """Names of the steps after which an exit may stand (every step but the tail)."""
        return [s.name for s in self.steps if s.kind != "tail"]

    @property
    def blocks(self) -> list[str]:
        return [s.name for s in self.steps if s.kind == "block"]

    def stage_ends(self) -> dict[str, str]:
        """Stage module name -> name of its last block (the step whose output leaves the stage)."""
        ends = {}
        for stage in self.stages:
            inside = [s.name for s in self.steps
                      if s.kind == "block" and (s.name == stage or s.name.startswith(stage + "."))]
            if inside:
                ends[stage] = inside[-1]
        return ends


class Segment(nn.Module):
    """A run of consecutive steps of a backbone; ``forward(state)`` runs them in order.

    ``name`` is the compute-unit name (``segment:layer2.1``; the tail segment ends in ``head``),
    ``position`` the exit position at which it ends, ``out_spec`` the layout of the state it returns:
    ``stream(state)`` is what heads read there, ``select(state, rows)`` keeps batch rows ``rows``.
    The first segment takes the image; a per-class plan's segments take and return one tensor.
    The modules are the backbone's own (shared).
    """

    def __init__(self, name: str, steps: Iterable[Step], position: int, out_spec: StateSpec = TENSOR_STATE):
        super().__init__()
        steps = tuple(steps)
        self.name = name
        self.position = position
        self.out_spec = out_spec
        self.step_names = tuple(s.name for s in steps)
        self._fns = [s.fn for s in steps]
        unique: dict[int, nn.Module] = {}
        for s in steps:
            for m in s.modules:
                unique.setdefault(id(m), m)
        self.parts = nn.ModuleList(unique.values())

    def forward(self, state: State) -> State:
        for fn in self._fns:
            state = fn(state)
        return state

    def stream(self, state: State) -> torch.Tensor:
        """The tensor heads read from this segment's output ``(B, ...)``."""
        return self.out_spec.stream(state)

    def select(self, state: State, rows: torch.Tensor) -> State:
        """This segment's output restricted to batch rows ``rows``."""
        return self.out_spec.select(state, rows)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, position={self.position}, steps={list(self.step_names)}"


_plans: dict[type, Callable[[nn.Module], BackbonePlan]] = {}


def register_plan(cls: type) -> Callable:
    """Decorator: register ``fn(model) -> BackbonePlan`` for models of class ``cls`` (and subclasses)."""
    def deco(fn: Callable[[nn.Module], BackbonePlan]) -> Callable[[nn.Module], BackbonePlan]:
        _plans[cls] = fn
        return fn
    return deco


def registered_plan(model: nn.Module) -> BackbonePlan | None:
    """The plan registered for ``model``'s class (nearest in its MRO), or None."""
    for cls in type(model).__mro__:
        if cls in _plans:
            return _plans[cls](model)
    return None


def plan_for(model: nn.Module, *, name: str | None = None) -> BackbonePlan:
    """The registered plan of ``model``'s class, else the generic plan (``UnsupportedModelError`` naming
    the model, or ``name``, and the reason when it cannot be made)."""
    plan = registered_plan(model)
    if plan is not None:
        return plan
    from .generic_plan import generic_plan

    return generic_plan(model, name=name)


def whole_plan(model: nn.Module) -> BackbonePlan:
    """A plan of one tail step: the whole model (any module; used for savers without exits)."""
    return BackbonePlan(type(model).__name__, (Step("head", "tail", model, (model,)),))


def cut_segments(plan: BackbonePlan, cuts: list[tuple[str, str]], *, prefix: str = "segment:",
                 tail_name: str = "segment:head", first_position: int = 0,
                 specs: Mapping[str, StateSpec] | None = None) -> list[Segment]:
    """Segments ending after each ``(step name, point name)`` in ``cuts`` (execution order), plus the tail.

    Segment i is named ``prefix + point name`` and ends at position ``first_position + i``; the last,
    which includes the model's own head, is named ``tail_name``. ``specs`` gives the state layout after
    a step (from the probe; default: one tensor).
    """
    specs = specs or {}
    index = {s.name: i for i, s in enumerate(plan.steps)}
    stops = [index[step] + 1 for step, _ in cuts] + [len(plan.steps)]
    segments, start = [], 0
    for i, stop in enumerate(stops):
        name = prefix + cuts[i][1] if i < len(cuts) else tail_name
        spec = specs.get(cuts[i][0], TENSOR_STATE) if i < len(cuts) else TENSOR_STATE
        segments.append(Segment(name, plan.steps[start:stop], first_position + i, spec))
        start = stop
    return segments


# -- plans --------------------------------------------------------------------------------------

def _run_sequence(mods: tuple[Callable[[torch.Tensor], torch.Tensor], ...], x: torch.Tensor) -> torch.Tensor:
    for m in mods:
        x = m(x)
    return x


def _call_chain(*mods: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> mods[-1](...mods[0](x))``; a partial (not a closure), so deepcopy and pickle follow the modules."""
    return partial(_run_sequence, mods)


def _stage_blocks(prefix: str, stages: Iterable[tuple[int, Iterable[nn.Module]]]) -> list[Step]:
    return [Step(f"{prefix}{si}.{bi}", "block", blk, (blk,))
            for si, stage in stages for bi, blk in enumerate(stage)]


@register_plan(nn.Sequential)
def _sequential_plan(model: nn.Sequential) -> BackbonePlan:
    named = list(model.named_children())
    steps = [Step(n, "block", m, (m,)) for n, m in named[:-1]]
    if named:
        n, m = named[-1]
        steps.append(Step("head", "tail", m, (m,)))
    return BackbonePlan("sequential", tuple(steps), stages=tuple(n for n, _ in named[:-1]))


def _register_nchw_plans() -> None:
    """Plans of the timm CNN-like families (ResNet, ConvNeXt, DaVit, EfficientNet, MobileNetV3)."""
    from timm.models.convnext import ConvNeXt, ConvNeXtStage
    from timm.models.davit import DaVit, DaVitStage
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3
    from timm.models.resnet import ResNet

    @register_plan(ResNet)
    def _resnet(m: ResNet) -> BackbonePlan:
        layers = [f"layer{i}" for i in range(1, 5)]
        steps = [Step("maxpool", "stem", _call_chain(m.conv1, m.bn1, m.act1, m.maxpool),
                      (m.conv1, m.bn1, m.act1, m.maxpool))]
        steps += [Step(f"{ln}.{bi}", "block", blk, (blk,)) for ln in layers
                  for bi, blk in enumerate(getattr(m, ln))]
        steps.append(Step("head", "tail", m.forward_head, (m.global_pool, m.fc)))
        return BackbonePlan("resnet", tuple(steps), tuple(layers), "nchw")

    def _stem_stages_norm_head(m: ConvNeXt | DaVit, family: str) -> BackbonePlan:
        """stem -> stages (each: downsample, blocks) -> norm_pre -> forward_head."""
        steps = [Step("stem", "stem", m.stem, (m.stem,))]
        for si, stage in enumerate(cast("Iterable[ConvNeXtStage | DaVitStage]", m.stages)):
            steps.append(Step(f"stages.{si}.downsample", "glue", stage.downsample, (stage.downsample,)))
            steps += [Step(f"stages.{si}.blocks.{bi}", "block", blk, (blk,)) for bi, blk in enumerate(stage.blocks)]
        steps.append(Step("head", "tail", _call_chain(m.norm_pre, m.forward_head), (m.norm_pre, m.head)))
        return BackbonePlan(family, tuple(steps), tuple(f"stages.{i}" for i in range(len(m.stages))), "nchw")

    register_plan(ConvNeXt)(partial(_stem_stages_norm_head, family="convnext"))
    register_plan(DaVit)(partial(_stem_stages_norm_head, family="davit"))

    def _effnet_like(m: EfficientNet | MobileNetV3, family: str, tail: Step) -> BackbonePlan:
        steps = [Step("bn1", "stem", _call_chain(m.conv_stem, m.bn1), (m.conv_stem, m.bn1))]
        steps += _stage_blocks("blocks.", enumerate(cast("Iterable[nn.Sequential]", m.blocks)))
        steps.append(tail)
        return BackbonePlan(family, tuple(steps), tuple(f"blocks.{i}" for i in range(len(m.blocks))), "nchw")

    @register_plan(EfficientNet)
    def _efficientnet(m: EfficientNet) -> BackbonePlan:
        tail = Step("head", "tail", _call_chain(m.conv_head, m.bn2, m.forward_head),
                    (m.conv_head, m.bn2, m.global_pool, m.classifier))
        return _effnet_like(m, "efficientnet", tail)

    @register_plan(MobileNetV3)
    def _mobilenetv3(m: MobileNetV3) -> BackbonePlan:
        tail = Step("head", "tail", m.forward_head,
                    (m.global_pool, m.conv_head, m.norm_head, m.act2, m.classifier))
        return _effnet_like(m, "mobilenetv3", tail)


def _register_token_plans() -> None:
    """Plans of the timm ViT and Swin families (tokens, nlc / nhwc)."""
    from timm.models.swin_transformer import SwinTransformer, SwinTransformerStage
    from timm.models.vision_transformer import VisionTransformer

    @register_plan(VisionTransformer)
    def _vit(m: VisionTransformer) -> BackbonePlan:
        stem = _call_chain(m.patch_embed, m._pos_embed, m.patch_drop, m.norm_pre)
        steps = [Step("norm_pre", "stem", stem, (m.patch_embed, m.patch_drop, m.norm_pre))]
        steps += [Step(f"blocks.{i}", "block", blk, (blk,)) for i, blk in enumerate(m.blocks)]
        head_mods = tuple(x for x in (m.norm, m.attn_pool, m.fc_norm, m.head) if x is not None)
        steps.append(Step("head", "tail", _call_chain(m.norm, m.forward_head), head_mods))
        patch = m.patch_embed.patch_size
        return BackbonePlan("vit", tuple(steps), (), "nlc", num_prefix_tokens=int(m.num_prefix_tokens),
                            patch_size=int(patch[0]) if isinstance(patch, (tuple, list)) else int(patch))

    @register_plan(SwinTransformer)
    def _swin(m: SwinTransformer) -> BackbonePlan:
        steps = [Step("patch_embed", "stem", m.patch_embed, (m.patch_embed,))]
        for si, stage in enumerate(cast("Iterable[SwinTransformerStage]", m.layers)):
            steps.append(Step(f"layers.{si}.downsample", "glue", stage.downsample, (stage.downsample,)))
            steps += [Step(f"layers.{si}.blocks.{bi}", "block", blk, (blk,)) for bi, blk in enumerate(stage.blocks)]
        steps.append(Step("head", "tail", _call_chain(m.norm, m.forward_head), (m.norm, m.head)))
        return BackbonePlan("swin", tuple(steps), tuple(f"layers.{i}" for i in range(len(m.layers))), "nhwc")


_register_nchw_plans()
_register_token_plans()
