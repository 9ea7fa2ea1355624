"""The graphs of a bundle: planned from the enabled exits, probed in PyTorch, exported to ONNX and each
checked against PyTorch in onnxruntime (``exits/export_bundle.py`` writes them with the manifest).

**Scores inside the graphs.** A graph whose output is an exit's logits (a head, the final segment run, the base)
also outputs the top-``k`` of their float32 softmax (``probs`` descending, ``ids`` int64, ties to the lower id, as
the cache stores them), so the router reads an exit's scores from the session instead of computing them in numpy.
**Fused exits.** The head of an exit that every configuration of the table enables runs inside the segment graph
ending at its position (outputs: the state that goes on, then ``logits``, ``probs``, ``ids``): one session call
per exit instead of two. At batch 1 on the demo model the two together took the bundle's time per sample from 376
to 298 microseconds (base graph 434).
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from .errors import ExitsError
from .model import ExitModel
from .runtime import on_saver

__all__ = ["BundleExportError", "default_exporter", "plan_parts"]


class BundleExportError(ExitsError):
    """A model or configuration that cannot be exported as a bundle, or a graph that does not match PyTorch."""


def _has_dynamo_argument() -> bool:
    """``torch.onnx.export(dynamo=...)`` exists from torch 2.5; from 2.9 it defaults to True."""
    return "dynamo" in inspect.signature(torch.onnx.export).parameters


def default_exporter() -> str:
    """``dynamo`` where ``torch.onnx.export`` has it and onnxscript is installed, else ``torchscript``."""
    import importlib.util

    return "dynamo" if _has_dynamo_argument() and importlib.util.find_spec("onnxscript") is not None else "torchscript"


def _check_packages(exporter: str) -> None:
    import importlib.util

    needed = ["onnx", "onnxruntime"] + (["onnxscript"] if exporter == "dynamo" else [])
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise BundleExportError(f"exporting a bundle with the {exporter} exporter needs {', '.join(missing)}: "
                                "pip install 'exitsearch[bundle]'")
    if exporter == "dynamo" and not _has_dynamo_argument():
        raise BundleExportError(f"torch {torch.__version__} has no dynamo ONNX exporter; use --exporter torchscript")


class _Run(nn.Module):
    """Consecutive segments of one chain, run in order (one graph)."""

    def __init__(self, segments: Sequence[nn.Module]):
        super().__init__()
        self.segments = nn.ModuleList(segments)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for seg in self.segments:
            x = seg(x)
        return x


class _Scored(nn.Module):
    """``body`` (and ``head`` on its output, for a fused exit), then the top-``k`` of the logits' float32 softmax:
    ``(logits, probs, ids)``, or ``(state, logits, probs, ids)`` with a head."""

    def __init__(self, body: nn.Module, k: int, head: nn.Module | None = None):
        super().__init__()
        self.body, self.head, self.k = body, head, k

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.outputs(self.body(x))

    def outputs(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The graph's outputs from the body's output ``h``."""
        z = h if self.head is None else self.head(h)
        top = torch.softmax(z.float(), dim=-1).topk(self.k, dim=-1, largest=True, sorted=True)
        return (z, top.values, top.indices) if self.head is None else (h, z, top.values, top.indices)


SCORED_OUTPUTS = ("output", "probs", "ids")
FUSED_OUTPUTS = ("output", "logits", "probs", "ids")


@dataclass
class _Part:
    """A graph to export: ``module(input)``, the input being the output of part ``source`` (None: the image);
    ``outputs``: its output names (the first is what the next part reads); ``fused``: the exit whose head it runs
    after its segments (None: none)."""

    name: str
    kind: str
    chain: str | None
    position: int
    final: bool
    module: nn.Module
    units: tuple[str, ...]
    source: str | None
    outputs: tuple[str, ...] = ("output",)
    fused: str | None = None

    @property
    def body(self) -> nn.Module:
        """The module whose output the next part reads (without the scores)."""
        return self.module.body if isinstance(self.module, _Scored) else self.module


def _runs(segments: Sequence[Any], cuts: set[int], chain: str, last: int | None) -> list[_Part]:
    """Segments grouped into runs that end at each cut position (and at ``last`` / the chain's end)."""
    parts: list[_Part] = []
    run = []
    for i, seg in enumerate(segments):
        run.append(seg)
        end = seg.position == last or (last is None and i == len(segments) - 1)
        if seg.position in cuts or end:
            parts.append(_Part(f"{chain}.{len(parts)}", "segment", chain, seg.position, chain == "backbone" and end,
                               _Run(run), tuple(s.name for s in run), parts[-1].name if parts else None))
            run = []
        if end:
            break
    return parts


def plan_parts(model: ExitModel, served: Sequence[int], *, base: bool = True, fuse: Sequence[int] = (),
               k: int = 0) -> list[_Part]:
    """The graphs that serve the enabled exits ``served`` (indices into ``model.exits``, execution order): saver
    runs, backbone runs, heads, base. ``fuse``: served exits whose head runs inside the segment graph ending at
    their position (at most one per position); ``k`` > 0: graphs ending at an exit's logits (heads, fused segments,
    the final segment, the base) also output the top-``k`` of their softmax."""
    specs = [model.exits[i] for i in served]
    fused: dict[tuple[str | None, int], Any] = {(_chain(model, model.exits[i]), model.exits[i].position):
                                                   model.exits[i] for i in fuse}
    if len(fused) < len(set(fuse)):
        raise BundleExportError("two fused exits stand at one position; fuse at most one head per segment graph")
    saver = [e for e in specs if on_saver(model, e)]
    parts = _runs(model.saver_segments, {e.position for e in saver}, "saver", saver[-1].position) if saver else []
    parts += _runs(model.segments, {e.position for e in specs if not on_saver(model, e)}, "backbone", None)
    for p in parts:
        e = fused.get((p.chain, p.position))
        if e is not None and e.key is not None:
            p.module, p.units = _Scored(p.module, k, model.heads[e.key]), (*p.units, f"head:{e.name}")
            p.outputs, p.fused = FUSED_OUTPUTS, e.name
        elif p.final and k:
            p.module, p.outputs = _Scored(p.module, k), SCORED_OUTPUTS
    ends = {(p.chain, p.position): p.name for p in parts}
    for e in specs:
        if e.key is not None and fused.get((_chain(model, e), e.position)) is not e:
            parts.append(_Part(f"head:{e.name}", "head", None, e.position, False,
                               _Scored(model.heads[e.key], k) if k else model.heads[e.key], (f"head:{e.name}",),
                               ends[(_chain(model, e), e.position)], SCORED_OUTPUTS if k else ("output",)))
    if base:
        parts.append(_Part("base", "base", None, model.segments[-1].position, True,
                           _Scored(model.backbone, k) if k else model.backbone,
                           tuple(s.name for s in model.segments), None, SCORED_OUTPUTS if k else ("output",)))
    return parts


def _chain(model: ExitModel, spec: Any) -> str:
    return "saver" if on_saver(model, spec) else "backbone"


def _probe(parts: Sequence[_Part], x: torch.Tensor) -> dict[str, tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
    """``(input, outputs)`` of every part on images ``x``, in PyTorch (the first output is what the next part
    reads); refuses a segment that passes on more than one tensor (the bundle's graphs take and return one)."""
    seen: dict[str, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}
    with torch.inference_mode():
        for part in parts:
            inp = x if part.source is None else seen[part.source][1][0]
            h = inp
            for seg in part.body.segments if isinstance(part.body, _Run) else (part.body,):
                h = seg(h)
                if not isinstance(h, torch.Tensor):
                    what = f"{len(h)} tensors" if isinstance(h, (tuple, list, dict)) else type(h).__name__
                    raise BundleExportError(f"{getattr(seg, 'name', part.name)}: passes on {what}, not one tensor; "
                                            "the bundle exporter handles single-tensor segments only")
            seen[part.name] = (inp, part.module.outputs(h) if isinstance(part.module, _Scored) else (h,))
    return seen


def _export_graph(part: _Part, example: torch.Tensor, path: Path, *, opset: int, exporter: str) -> None:
    module = part.module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                program = torch.onnx.export(module, (example,), dynamo=True, input_names=["input"],
                                            output_names=list(part.outputs), opset_version=opset, verbose=False,
                                            dynamic_shapes=({0: torch.export.Dim("batch")},))
                cast("torch.onnx.ONNXProgram", program).save(str(path))  # dynamo=True: never None
            else:
                # torch 2.4 has no such argument
                legacy: dict[str, Any] = {"dynamo": False} if _has_dynamo_argument() else {}
                torch.onnx.export(module, (example,), str(path), input_names=["input"],
                                  output_names=list(part.outputs), opset_version=opset,
                                  dynamic_axes={"input": {0: "batch"}, **{o: {0: "batch"} for o in part.outputs}},
                                  **legacy)
    except Exception as exc:  # the exporters raise many types; one line naming the graph
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BundleExportError(f"graph {part.name!r}: the {exporter} exporter failed ({type(exc).__name__}: "
                                f"{first[:300]})") from None


def _check_graph(part: _Part, data: bytes, cases: Sequence[tuple[torch.Tensor, tuple[torch.Tensor, ...]]], *,
                 rtol: float, atol: float) -> float:
    """Largest ``|ort - torch|`` of the graph's values over ``cases`` (input, PyTorch outputs); refuses a graph out
    of tolerance, or whose top-k class ids differ from PyTorch's where its probabilities are not tied within it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    if names != list(part.outputs):
        raise BundleExportError(f"graph {part.name!r}: onnxruntime gives outputs {names}, expected "
                                f"{list(part.outputs)}")
    worst = 0.0
    for inp, wants in cases:
        gots = session.run(None, {session.get_inputs()[0].name: inp.numpy()})
        for name, got, want in zip(names, gots, wants, strict=True):
            ref = want.numpy()
            if got.shape != ref.shape:
                raise BundleExportError(f"graph {part.name!r}: onnxruntime gives {name} of shape {got.shape}, "
                                        f"PyTorch {ref.shape}")
            if name == "ids":
                continue
            diff = np.abs(got.astype(np.float64) - ref)
            worst = max(worst, float(diff.max()) if diff.size else 0.0)
            if not np.all(diff <= atol + rtol * np.abs(ref)):
                raise BundleExportError(f"graph {part.name!r}: onnxruntime differs from PyTorch by up to {worst:.3g} "
                                        f"at batch {len(inp)} (tolerance {atol:g} + {rtol:g} x |value|)")
        if "ids" in names:
            _check_ids(part, gots[names.index("ids")], wants[names.index("ids")].numpy(),
                       wants[names.index("probs")].numpy(), atol, rtol)
    return worst


def _check_ids(part: _Part, got: np.ndarray, ref: np.ndarray, probs: np.ndarray, atol: float, rtol: float) -> None:
    """The top-k ids must be PyTorch's, except among probabilities tied within the tolerance (either order is
    right there)."""
    tied = np.zeros(probs.shape, dtype=bool)
    close = np.abs(np.diff(probs, axis=1)) <= atol + rtol * np.abs(probs[:, 1:])
    tied[:, 1:] |= close
    tied[:, :-1] |= close
    if np.any((got != ref) & ~tied):
        raise BundleExportError(f"graph {part.name!r}: onnxruntime's top-k class ids differ from PyTorch's")
