"""The generic plan: cut any traceable timm model at its block boundaries with torch.fx, no per-class code.

1. **Blocks from the model's own description.** ``feature_info`` names the modules timm takes features
   from (``layer2``, ``stages.1``, ``blocks.7``). A module kept in a container (``stages.1`` of
   ``stages``) stands for all its siblings; a stage that is a container, or holds one named
   ``blocks``, stands for its children. A first entry at stride <= 2 is a stem tap (a boundary, not a
   block). Without usable ``feature_info``, the children of the outermost containers are the stages.
2. **One trace, blocks as leaves.** The model is traced with ``torch.fx`` (timm's own leaf modules and
   functions kept whole), every block one ``call_module`` node, so only the glue between blocks needs to
   be traceable.
3. **Cut between blocks.** Step i runs the graph's nodes after block i-1 up to block i. What crosses a
   boundary is every value made before it and used after it: the block's output (the stream, first)
   and anything else still needed (a shortcut, class tokens, a positional table, other branches).
   Steps read parameters and buffers through their owner modules when called, so they follow the
   backbone to another device and never hold copies.

Whether the cut is exact is proven by the probe (``exits/probe.py``) when exits are attached.
"""
from __future__ import annotations

import copy
import inspect
import operator
from collections.abc import Callable, Iterable
from typing import Any, TypeGuard

from torch import fx, nn

from .errors import UnsupportedModelError
from .segments import BackbonePlan, Step

__all__ = ["generic_plan", "find_blocks", "trace_with_leaves"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_ROOT = "backbone"


def _is_builtin(module: nn.Module) -> bool:
    """A plain torch.nn layer (conv, norm, activation, pooling), as opposed to a model's own block class
    or a container."""
    return type(module).__module__.startswith("torch.nn") and not isinstance(module, _CONTAINERS)


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def _stage_of(name: str, named: dict[str, nn.Module]) -> list[str]:
    """The stages a feature module stands for: all its non-builtin siblings when it (or its shallowest
    ancestor) sits in a container, else itself."""
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        here = ".".join(parts[:depth])
        parent = _parent(here)
        if parent and isinstance(named.get(parent), _CONTAINERS):
            children = [f"{parent}.{c}" for c, m in named[parent].named_children() if not _is_builtin(m)]
            return children if here in children else [*children, here]
    return [name]


def _holds_blocks(module: nn.Module | None) -> TypeGuard[nn.Module]:
    """A container of blocks (a stage), as opposed to one block written as a sequence of plain layers."""
    return isinstance(module, _CONTAINERS) and len(module) > 0 and not any(_is_builtin(c) for c in module.children())


def _blocks_of(stage: str, named: dict[str, nn.Module]) -> list[str]:
    """A stage's blocks: a container's children, the children of its ``blocks`` container, else itself."""
    module = named[stage]
    if _holds_blocks(module):
        return [f"{stage}.{c}" for c, _ in module.named_children()]
    blocks = module._modules.get("blocks")
    if _holds_blocks(blocks):
        return [f"{stage}.blocks.{c}" for c, _ in blocks.named_children()]
    return [stage]


def _feature_modules(model: nn.Module, named: dict[str, nn.Module]) -> list[dict[str, Any]]:
    """``feature_info`` entries that name a module of the model (a name that is a unique suffix of one is
    completed), leaving out the classifier."""
    info: Any = getattr(model, "feature_info", None)
    entries = (info.info if hasattr(info, "info") else info) or []
    get_classifier: Any = getattr(model, "get_classifier", None)
    classifier = get_classifier() if get_classifier is not None else None
    out = []
    for e in entries:
        if not isinstance(e, dict) or not e.get("module"):
            continue
        name = e["module"]
        if name not in named:
            ends = [n for n in named if n.endswith("." + name)]
            if len(ends) != 1:
                continue
            name = ends[0]
        if named[name] is not classifier and named[name] is not model:
            out.append(dict(e, module=name))
    return out


def _outer_containers(model: nn.Module) -> list[str]:
    """Stages when ``feature_info`` names none: the children of the outermost containers holding a block."""
    found: list[str] = []
    for name, m in model.named_modules():
        if (name and isinstance(m, _CONTAINERS) and not any(name.startswith(f + ".") for f in found)
                and any(not _is_builtin(c) for c in m.children())):
            found.append(name)
    return [f"{n}.{c}" for n in found for c, child in model.get_submodule(n).named_children() if not _is_builtin(child)]


def find_blocks(model: nn.Module) -> tuple[list[str], list[str], list[str]]:
    """``(stem taps, stages, blocks)``: module names, outermost blocks only, in registration order."""
    named = dict(model.named_modules())
    entries = _feature_modules(model, named)
    stems: list[str] = []
    stages: list[str] = []
    for i, e in enumerate(entries):
        if i == 0 and len(entries) > 1 and int(e.get("reduction", 0) or 0) <= 2:
            stems.append(e["module"])
            continue
        stages += [s for s in _stage_of(e["module"], named) if s not in stages]
    if not stages:
        stages = _outer_containers(model)
    blocks = [b for s in stages for b in _blocks_of(s, named)]
    outer = [b for b in blocks if not any(b.startswith(o + ".") for o in blocks)]
    stems = [s for s in stems if not any(s == o or s.startswith(o + ".") for o in outer)]
    return stems, stages, outer


class _BlockTracer(fx.Tracer):
    """fx tracer that keeps blocks and timm's non-traceable modules and functions whole."""

    def __init__(self, leaves: Iterable[str]):
        from timm.models._features_fx import get_notrace_functions, get_notrace_modules

        super().__init__(autowrap_functions=tuple(f for f in get_notrace_functions() if callable(f)))
        self.leaves = set(leaves)
        self.leaf_types = tuple(get_notrace_modules())

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or isinstance(m, self.leaf_types) or super().is_leaf_module(m, qualname)


def _concrete_defaults(model: nn.Module) -> dict[str, Any]:
    """Every forward argument after the image, fixed at its default (``mask=None``), so that tracing takes
    the branch a plain ``model(x)`` takes."""
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    return {p.name: p.default for p in params
            if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD}


def trace_with_leaves(model: nn.Module, leaves: Iterable[str] = (), *, name: str | None = None
                      ) -> tuple[fx.Graph, nn.Module]:
    """The fx graph of ``model``'s forward (eval mode) with ``leaves`` (module names) and timm's non-traceable
    modules and functions kept whole, and the module it was traced on; ``UnsupportedModelError`` (one
    line) when it cannot be traced.

    The trace runs on a copy that shares the parameters and buffers: whatever tracing leaves behind in a
    module (a cache filled with proxies, as LeViT's attention-bias cache is; constants the tracer stores)
    stays in the copy, and ``model`` is untouched.
    """
    name = name or type(model).__name__
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    try:
        root = copy.deepcopy(model, shared).eval()
        return _BlockTracer(leaves).trace(root, concrete_args=_concrete_defaults(root) or None), root
    except Exception as exc:  # any failure inside the model's own forward: one line naming it
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UnsupportedModelError(f"{name}: the generic plan cannot trace the forward between blocks with "
                                    f"torch.fx ({type(exc).__name__}: {reason})") from None


class _StepBuilder:
    """Copies a range of a traced graph into a GraphModule of its own: ``state -> state``."""

    def __init__(self, model: nn.Module, graph: fx.Graph, traced: nn.Module):
        self.model = model
        self.traced = traced
        self.nodes = list(graph.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.last_use = {n: max((self.index[u] for u in n.users), default=-1) for n in self.nodes}

    def live(self, cut: int, stream: fx.Node) -> list[fx.Node]:
        """Values made before node ``cut`` and used from it on: the stream first, then in graph order."""
        out = [n for n in self.nodes[:cut] if n.op != "get_attr" and self.last_use[n] >= cut and n is not stream]
        return [stream, *out]

    def build(self, start: int, stop: int, inputs: list[fx.Node] | None, outputs: list[fx.Node] | None
              ) -> tuple[Callable[..., Any], tuple[nn.Module, ...]]:
        """Nodes ``[start, stop)``; ``inputs`` None: the image; ``outputs`` None: the model's output."""
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        owners: dict[str, Any] = {}
        modules: dict[int, nn.Module] = {}

        def attr(node: fx.Node) -> fx.Node:
            """A parameter or buffer read through its owner in ``model`` when called; a constant the tracer
            made (``_tensor_constant0``: a tensor computed from Python values) kept as it is."""
            path, _, field = str(node.target).rpartition(".")
            owner = self.model.get_submodule(path) if path else self.model
            if not hasattr(owner, field):
                key = _flat(str(node.target))
                owners[key] = getattr(self.traced.get_submodule(path), field)
                return g.get_attr(key)
            key = _flat(path) if path else _ROOT
            owners[key] = owner
            if path:
                modules.setdefault(id(owner), owner)
            return g.call_function(getattr, (g.get_attr(key), field))

        def lookup(node: fx.Node) -> fx.Node:
            if node not in env:
                if node.op != "get_attr":
                    raise UnsupportedModelError(f"internal: value {node.name} used before it is made")
                env[node] = attr(node)
            return env[node]

        if inputs is not None:
            state = g.placeholder("state")
            if len(inputs) == 1:
                env[inputs[0]] = state
            else:
                for j, n in enumerate(inputs):
                    env[n] = g.call_function(operator.getitem, (state, j))
        for node in self.nodes[start:stop]:
            if node.op in ("get_attr", "output"):
                continue
            if node.op == "call_module":
                key = _flat(str(node.target))
                mod = self.model.get_submodule(str(node.target))
                owners[key] = mod
                modules.setdefault(id(mod), mod)
                call = g.call_module(key, fx.node.map_arg(node.args, lookup), fx.node.map_arg(node.kwargs, lookup))
                call.meta = dict(node.meta)
                env[node] = call
            else:
                env[node] = g.node_copy(node, lookup)
        if outputs is None:
            g.output(fx.node.map_arg(self.nodes[-1].args[0], lookup))
        else:
            g.output(lookup(outputs[0]) if len(outputs) == 1 else tuple(lookup(n) for n in outputs))
        # its bound forward: GraphModule.__call__ prints the generated code to stderr on any error
        return fx.GraphModule(owners, g, class_name="GenericStep").forward, tuple(modules.values())


def _flat(target: str) -> str:
    return "m_" + target.replace(".", "_")


def generic_plan(model: nn.Module, *, name: str | None = None) -> BackbonePlan:
    """Steps of ``model`` cut after its stem taps and after each block; ``UnsupportedModelError`` (one line,
    naming the model or ``name``) when its blocks cannot be found or the forward between them cannot be
    traced."""
    name = name or type(model).__name__
    stems, stages, blocks = find_blocks(model)
    if not blocks:
        raise UnsupportedModelError(f"{name}: no blocks found (no feature_info and no top-level block container)")
    graph, traced = trace_with_leaves(model, [*stems, *blocks], name=name)
    builder = _StepBuilder(model, graph, traced)
    kinds = {**{s: "stem" for s in stems}, **{b: "block" for b in blocks}}
    calls: dict[str, list[int]] = {}
    for i, node in enumerate(builder.nodes):
        if node.op == "call_module" and node.target in kinds:
            calls.setdefault(str(node.target), []).append(i)
    twice = [t for t, at in calls.items() if len(at) > 1]
    if twice:
        raise UnsupportedModelError(f"{name}: block {twice[0]!r} runs {len(calls[twice[0]])} times in one forward; "
                                    "the generic plan needs each block to run once")
    cuts = sorted((at[0], t) for t, at in calls.items())
    if not any(kinds[t] == "block" for _, t in cuts):
        raise UnsupportedModelError(f"{name}: none of its blocks ({blocks[0]!r}, ...) runs in the traced forward")
    steps: list[Step] = []
    start, inputs = 0, None
    for at, target in cuts:
        stream = builder.nodes[at]
        outputs = builder.live(at + 1, stream)
        fn, mods = builder.build(start, at + 1, inputs, outputs)
        steps.append(Step(target, kinds[target], fn, mods))
        start, inputs = at + 1, outputs
    fn, mods = builder.build(start, len(builder.nodes), inputs, None)
    steps.append(Step("head", "tail", fn, mods))
    fmt = str(getattr(model, "output_fmt", "NCHW")).upper()
    names = [s.name for s in steps[:-1]]
    return BackbonePlan("generic", tuple(steps), tuple(s for s in stages if any(_inside(b, s) for b in names)),
                        layout=None, num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 0) or 0),
                        stateful=True, channels_last="NHWC" in fmt, channels=_channel_hints(model, names))


def _inside(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def _channel_hints(model: nn.Module, steps: list[str]) -> dict[str, int]:
    """Step name -> the channels ``feature_info`` gives for it or for the stage holding it."""
    hints = {}
    for e in _feature_modules(model, dict(model.named_modules())):
        if e.get("num_chs"):
            hints.update({s: int(e["num_chs"]) for s in steps if _inside(s, e["module"])})
    return hints
