"""``ExitModel``: a frozen backbone cut into segments, exit heads at chosen positions, an optional saver.

``attach_exits("resnet50", points="blocks", heads=("linear", "mlp3_h500"))`` discovers the positions,
builds one head per (position, head type) and describes every exit and compute unit in the terms of
the cache (``data_cache.ExitInfo`` / ``UnitInfo``). The backbone is never modified; its own head is
the final exit. A saver (TinySaver) is an independent model run first on the same input.

Naming (see docs/exits.md): exits ``<module>/<head type>``, the final exit ``head`` (head type
``final``), the saver's own output ``saver`` (head ``saver``), a saver's exits ``saver:<module>/<head>``.
Units: backbone segments ``segment:<module>`` (the last, with the model's head, ``segment:head``),
heads ``head:<exit name>``, saver ``saver`` (a saver with exits: ``saver:<module>`` ... ``saver``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from data_cache import ExitInfo, UnitInfo

from ._limits import check_input_size
from ._registry import create_head, head_entrypoint
from .backbone import create_backbone, default_input_size, timm_name
from .errors import ExitsError
from .fingerprint import weights_fingerprint
from .points import ExitPoint, discover_points, resolve_point_names
from .probe import probe_plan
from .segments import BackbonePlan, Segment, cut_segments, plan_for, whole_plan
from .state import State

__all__ = ["ExitSpec", "UnitSpec", "ExitModel", "attach_exits", "create_backbone", "default_input_size",
           "check_input_size", "head_key",
           "normalize_heads"]

PointsArg = str | Sequence[str]
HeadsArg = str | Sequence[str] | Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class ExitSpec:
    """An exit in execution order; ``units`` are every compute unit its output needs.

    ``key`` is the head's key in ``ExitModel.heads`` (None for the final and the saver exit);
    ``module`` the backbone (or saver) module whose output the head reads.
    """

    name: str
    position: int
    head: str
    units: tuple[str, ...]
    final: bool = False
    key: str | None = None
    module: str = ""


@dataclass(frozen=True, eq=False)
class UnitSpec:
    """A compute unit: ``module(input)`` where the input is the output of unit ``source`` (None: the image)."""

    name: str
    kind: str
    module: nn.Module
    source: str | None


@dataclass
class _Chain:
    """One model run from the input: its plan, exit points and segments."""

    model: nn.Module
    plan: BackbonePlan
    points: list[ExitPoint]
    segments: list[Segment]
    exit_prefix: str
    final_exit: str
    final_head: str
    unit_kind: str
    num_classes: int
    head_labels: dict[str, dict[str, Any]] = field(default_factory=dict)


def head_key(exit_name: str) -> str:
    """The ``nn.ModuleDict`` key of an exit's head (``'.'`` is not allowed in module names)."""
    return exit_name.replace(".", "-")


def normalize_heads(heads: HeadsArg) -> dict[str, dict[str, Any]]:
    """``"linear"``, ``("linear", "mlp")`` or ``{"mlp_h256": {"type": "mlp", "hidden": 256}}`` ->
    ``{label: {"type": registered name, **options}}``; checks that every type is registered."""
    if isinstance(heads, str):
        heads = (heads,)
    items = heads.items() if isinstance(heads, Mapping) else ((h, {}) for h in heads)
    out: dict[str, dict[str, Any]] = {}
    for label, opts in items:
        opts = dict(opts or {})
        htype = opts.pop("type", label)
        head_entrypoint(htype)
        if not label or "/" in label or ":" in label:
            raise ExitsError(f"head label {label!r} must be non-empty and contain no '/' or ':'")
        out[label] = {"type": htype, **opts}
    return out


class ExitModel(nn.Module):
    """A frozen backbone with exit heads (and an optional saver), described for the cache.

    Attributes: ``backbone`` (frozen, kept in eval mode), ``heads`` (``nn.ModuleDict``, one per
    (position, head type), keys from ``head_key``), ``saver``, ``exits`` (``ExitSpec``, execution
    order, final last), ``segments`` (backbone segments; ``segments[i]`` ends at exit point i and the
    last one, with the model's head, at the final position), ``units`` (``UnitSpec``, execution
    order), ``exit_points``/``saver_exit_points``, ``num_classes``, ``input_size``, ``model_name``.

    Positions are 0-based in execution order: a saver's exit points, the saver's output, then the
    backbone's exit points and its final exit. Each model is cut by its registered plan or the generic
    plan and probed once: the steps run in order must equal its own forward bit for bit
    (``check_exact=False`` skips that comparison, not the probe).
    """

    def __init__(self, backbone: nn.Module, *, points: PointsArg = "blocks", heads: HeadsArg = ("linear",),
                 num_classes: int | None = None, saver: nn.Module | None = None,
                 saver_points: PointsArg | None = None, saver_heads: HeadsArg | None = None,
                 train_saver: bool = False, input_size: Sequence[int] | None = None,
                 model_name: str | None = None, saver_name: str | None = None, check_exact: bool = True):
        super().__init__()
        self.check_exact = check_exact
        self.backbone = backbone.eval().requires_grad_(False)
        self.saver = saver
        self.train_saver = bool(saver is not None and train_saver)
        if saver is not None:
            saver.train(self.train_saver).requires_grad_(self.train_saver)
        self.model_name = model_name or timm_name(backbone)
        self.saver_name = None if saver is None else (saver_name or timm_name(saver))
        self.input_size = default_input_size(backbone, input_size)
        check_input_size(self.input_size)
        self.head_configs = normalize_heads(heads)
        self.saver_head_configs = normalize_heads(saver_heads) if saver_heads is not None else dict(self.head_configs)
        self.heads = nn.ModuleDict()
        self._chains: list[_Chain] = []
        position, expected = 0, f"num_classes={num_classes}"
        if saver is not None:
            assert self.saver_name is not None  # set from the saver above
            chain = self._build_chain(saver, self.saver_name, saver_points or [], self.saver_head_configs, position,
                                      exit_prefix="saver:", seg_prefix="saver:", tail_name="saver",
                                      final_exit="saver", final_head="saver", unit_kind="saver",
                                      num_classes=num_classes)
            if num_classes is None:
                num_classes, expected = chain.num_classes, f"the saver's {chain.num_classes}"
            position = chain.segments[-1].position + 1
        chain = self._build_chain(backbone, self.model_name, points, self.head_configs, position,
                                  exit_prefix="", seg_prefix="segment:", tail_name="segment:head",
                                  final_exit="head", final_head="final", unit_kind="segment",
                                  num_classes=num_classes, expected=expected)
        self.num_classes = chain.num_classes
        self.exits, self.units = self._describe()
        self._units_by_name = {u.name: u for u in self.units}

    # -- construction -------------------------------------------------------------------------
    def _build_chain(self, model: nn.Module, name: str, points: PointsArg, head_configs: dict[str, dict[str, Any]],
                     first_position: int, *, exit_prefix: str, seg_prefix: str, tail_name: str,
                     final_exit: str, final_head: str, unit_kind: str, num_classes: int | None,
                     expected: str = "") -> _Chain:
        """Cut ``model`` at ``points``, probe it once, build its heads; ``num_classes`` must match."""
        has_points = isinstance(points, str) or len(points) > 0
        plan = plan_for(model, name=name) if has_points else whole_plan(model)
        names = resolve_point_names(plan, points, model_name=name, module_names={n for n, _ in model.named_modules()})
        probe = probe_plan(model, plan, self.input_size, name=name, exact=self.check_exact and has_points)
        out = probe.output
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ExitsError(f"{name}: the model's output must be logits (B, num_classes), got {shape}")
        classes = int(out.shape[-1])
        if num_classes is not None and classes != num_classes:
            raise ExitsError(f"{name}: outputs {classes} classes, expected {expected or num_classes}")
        exit_points = discover_points(plan, names, self.input_size, probe.streams(), first_position=first_position,
                                      model_name=name)
        segments = cut_segments(plan, names, prefix=seg_prefix, tail_name=tail_name, first_position=first_position,
                                specs={s.name: spec for s, spec in zip(plan.steps, probe.specs, strict=True)})
        chain = _Chain(model, plan, exit_points, segments, exit_prefix, final_exit, final_head, unit_kind, classes,
                       head_configs)
        for p in exit_points:
            for label, cfg in head_configs.items():
                opts = {k: v for k, v in cfg.items() if k != "type"}
                self.heads[head_key(f"{exit_prefix}{p.module}/{label}")] = create_head(
                    cfg["type"], p.num_chs, classes, layout=p.layout, num_prefix_tokens=p.num_prefix_tokens, **opts)
        self._chains.append(chain)
        return chain

    def _describe(self) -> tuple[list[ExitSpec], list[UnitSpec]]:
        exits: list[ExitSpec] = []
        units: list[UnitSpec] = []
        for chain in self._chains:
            needed: list[str] = []
            for i, seg in enumerate(chain.segments):
                units.append(UnitSpec(seg.name, chain.unit_kind, seg, needed[-1] if needed else None))
                needed.append(seg.name)
                if i == len(chain.points):
                    exits.append(ExitSpec(chain.final_exit, seg.position, chain.final_head, tuple(needed),
                                          final=chain.final_exit == "head"))
                    continue
                point = chain.points[i]
                for label in chain.head_labels:
                    name = f"{chain.exit_prefix}{point.module}/{label}"
                    unit = f"head:{name}"
                    units.append(UnitSpec(unit, "head", self.heads[head_key(name)], seg.name))
                    exits.append(ExitSpec(name, point.position, label, (*needed, unit), key=head_key(name),
                                          module=point.module))
        return exits, units

    # -- structure ----------------------------------------------------------------------------
    @property
    def plan(self) -> BackbonePlan:
        """The plan the backbone was cut by (its ``family`` is ``generic`` for the generic plan)."""
        return self._chains[-1].plan

    @property
    def segments(self) -> list[Segment]:
        """Backbone segments in order; the last includes the backbone's own norm and head."""
        return self._chains[-1].segments

    @property
    def saver_segments(self) -> list[Segment]:
        """The saver's segments (one when it carries no exits); empty without a saver."""
        return self._chains[0].segments if self.saver is not None else []

    @property
    def exit_points(self) -> list[ExitPoint]:
        return list(self._chains[-1].points)

    @property
    def saver_exit_points(self) -> list[ExitPoint]:
        return list(self._chains[0].points) if self.saver is not None else []

    @property
    def n_positions(self) -> int:
        return self.exits[-1].position + 1

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        return dict(getattr(self.backbone, "pretrained_cfg", None) or {})

    @property
    def data_config(self) -> dict[str, Any]:
        """timm data config (input_size, mean, std, crop_pct, interpolation, crop_mode) at ``input_size``."""
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=self.backbone) if self.pretrained_cfg else resolve_data_config({})
        cfg["input_size"] = tuple(self.input_size)
        return cfg

    def exit(self, name: str) -> ExitSpec:
        """The exit called ``name``."""
        for e in self.exits:
            if e.name == name:
                return e
        raise ExitsError(f"{self.model_name} has no exit {name!r}; exits are {[e.name for e in self.exits]}")

    def head_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters: every head's, and the saver's when ``train_saver``."""
        params = list(self.heads.parameters())
        if self.train_saver:
            assert self.saver is not None  # train_saver implies a saver (__init__)
            params += list(self.saver.parameters())
        return params

    def train(self, mode: bool = True) -> ExitModel:
        """Heads (and a trainable saver) follow ``mode``; the backbone stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        if self.saver is not None and not self.train_saver:
            self.saver.eval()
        return self

    # -- forward ------------------------------------------------------------------------------
    def forward_features_at(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per position (length ``n_positions``): the features heads read there (the stream of the
        segment's output state); at a chain's last position (the saver's output, the final exit) its
        logits ``(B, num_classes)``."""
        out = []
        for chain in self._chains:
            h = x
            for seg in chain.segments:
                h = seg(h)
                out.append(seg.stream(h))
        return out

    def unit_input(self, unit: UnitSpec, outputs: Mapping[str | None, State]) -> State:
        """What ``unit.module`` reads, given ``outputs`` (unit name -> its output; None -> the image):
        a segment the whole state of its source, a head the stream."""
        state = outputs[unit.source]
        if unit.kind == "head":
            return cast(Segment, self._units_by_name[cast(str, unit.source)].module).stream(state)
        return state

    def forward_heads(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Logits ``(B, num_classes)`` of every exit from ``forward_features_at``'s output."""
        return [features[e.position] if e.key is None else self.heads[e.key](features[e.position]) for e in self.exits]

    def forward_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits ``(B, num_classes)`` of every exit in ``exits`` order (final last), in one pass."""
        return self.forward_heads(self.forward_features_at(x))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_exits(x)

    # -- cache records ------------------------------------------------------------------------
    def cache_exits(self) -> list[ExitInfo]:
        return [ExitInfo(e.name, e.position, e.head, e.units, e.final) for e in self.exits]

    def cache_units(self, macs: Mapping[str, float], latency_s: Mapping[str, float] | None = None) -> list[UnitInfo]:
        """``UnitInfo`` per unit (execution order) with per-sample ``macs`` and optional latency."""
        missing = [u.name for u in self.units if u.name not in macs]
        if missing:
            raise ExitsError(f"cache_units: no MACs for units {missing}")
        latency_s = latency_s or {}
        return [UnitInfo(u.name, u.kind, float(macs[u.name]),
                         None if latency_s.get(u.name) is None else float(latency_s[u.name])) for u in self.units]

    def fingerprint(self) -> str:
        """Fingerprint of the backbone's weights (``sha256:...``)."""
        return weights_fingerprint(self.backbone)

    def head_fingerprint(self) -> str:
        return weights_fingerprint(self.heads)

    def saver_fingerprint(self) -> str | None:
        return None if self.saver is None else weights_fingerprint(self.saver)

    def provenance(self) -> dict[str, Any]:
        """JSON-ready description for a cache: names, fingerprints, heads, points, input and normalisation."""
        import timm

        cfg = self.data_config
        return {
            "model": {"name": self.model_name, "fingerprint": self.fingerprint()},
            "heads": {"configs": self.head_configs, "fingerprint": self.head_fingerprint()},
            "points": [p.module for p in self.exit_points],
            "saver": None if self.saver is None else {
                "name": self.saver_name, "fingerprint": self.saver_fingerprint(),
                "points": [p.module for p in self.saver_exit_points], "heads": self.saver_head_configs},
            "input": {"input_size": list(cfg["input_size"]), "mean": list(cfg["mean"]), "std": list(cfg["std"]),
                      "interpolation": cfg.get("interpolation"), "crop_pct": cfg.get("crop_pct"),
                      "crop_mode": cfg.get("crop_mode")},
            "versions": {"torch": torch.__version__, "timm": timm.__version__},
        }


def attach_exits(backbone: nn.Module | str, *, points: PointsArg = "blocks", heads: HeadsArg = ("linear",),
                 num_classes: int | None = None, saver: nn.Module | str | None = None,
                 saver_points: PointsArg | None = None, saver_heads: HeadsArg | None = None,
                 train_saver: bool = False, input_size: Sequence[int] | None = None,
                 saver_kwargs: Mapping[str, Any] | None = None, check_exact: bool = True,
                 **timm_kwargs: Any) -> ExitModel:
    """Attach exit heads to a backbone (a module or a timm model name, random init unless
    ``pretrained=True``; a local file: ``pretrained_cfg_overlay=dict(file=PATH)``) and an optional saver.

    ``points``: ``"blocks"`` (after every block), ``"stages"`` or a list of module names.
    ``heads``: head types, or ``{label: {"type": ..., **options}}``. ``timm_kwargs`` go to
    ``timm.create_model`` for the backbone, ``saver_kwargs`` for a saver given by name.
    ``check_exact=False`` skips the probe's comparison with the model's own forward (faster attach).
    """
    name = backbone if isinstance(backbone, str) else None
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, num_classes=num_classes, **timm_kwargs)
    saver_name = saver if isinstance(saver, str) else None
    if isinstance(saver, str):
        saver = create_backbone(saver, num_classes=num_classes, **dict(saver_kwargs or {}))
    return ExitModel(backbone, points=points, heads=heads, num_classes=num_classes, saver=saver,
                     saver_points=saver_points, saver_heads=saver_heads, train_saver=train_saver,
                     input_size=input_size, model_name=name, saver_name=saver_name, check_exact=check_exact)
