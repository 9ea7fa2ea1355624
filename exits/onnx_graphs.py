"""The graphs of a bundle: planned from the enabled exits, probed in PyTorch, exported to ONNX and each
checked against PyTorch in onnxruntime (``exits/export_bundle.py`` writes them with the manifest)."""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class _Part:
    """A graph to export: ``module(input)``, the input being the output of part ``source`` (None: the image)."""

    name: str
    kind: str
    chain: str | None
    position: int
    final: bool
    module: nn.Module
    units: tuple[str, ...]
    source: str | None


def _runs(segments: Sequence[Any], cuts: set[int], chain: str, last: int | None) -> list[_Part]:
    """Segments grouped into runs that end at each cut position (and at ``last`` / the chain's end)."""
    parts, run = [], []
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


def plan_parts(model: ExitModel, served: Sequence[int], *, base: bool = True) -> list[_Part]:
    """The graphs that serve the enabled exits ``served`` (indices into ``model.exits``, execution order): saver
    runs, backbone runs, heads, base."""
    specs = [model.exits[i] for i in served]
    saver = [e for e in specs if on_saver(model, e)]
    parts = _runs(model.saver_segments, {e.position for e in saver}, "saver", saver[-1].position) if saver else []
    parts += _runs(model.segments, {e.position for e in specs if not on_saver(model, e)}, "backbone", None)
    ends = {(p.chain, p.position): p.name for p in parts}
    for e in specs:
        if e.key is not None:
            parts.append(_Part(f"head:{e.name}", "head", None, e.position, False, model.heads[e.key],
                               (f"head:{e.name}",), ends[("saver" if on_saver(model, e) else "backbone", e.position)]))
    if base:
        parts.append(_Part("base", "base", None, model.segments[-1].position, True, model.backbone,
                           tuple(s.name for s in model.segments), None))
    return parts


def _probe(parts: Sequence[_Part], x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``(input, output)`` of every part on images ``x``, in PyTorch; refuses a segment that passes on more
    than one tensor (the bundle's graphs take and return one)."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.inference_mode():
        for part in parts:
            inp = x if part.source is None else seen[part.source][1]
            h = inp
            for seg in part.module.segments if isinstance(part.module, _Run) else (part.module,):
                h = seg(h)
                if not isinstance(h, torch.Tensor):
                    what = f"{len(h)} tensors" if isinstance(h, (tuple, list, dict)) else type(h).__name__
                    raise BundleExportError(f"{getattr(seg, 'name', part.name)}: passes on {what}, not one tensor; "
                                            "the bundle exporter handles single-tensor segments only")
            seen[part.name] = (inp, h)
    return seen


def _export_graph(part: _Part, example: torch.Tensor, path: Path, *, opset: int, exporter: str) -> None:
    module = part.module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                program = torch.onnx.export(module, (example,), dynamo=True, input_names=["input"],
                                            output_names=["output"], opset_version=opset, verbose=False,
                                            dynamic_shapes=({0: torch.export.Dim("batch")},))
                program.save(str(path))
            else:
                legacy = {"dynamo": False} if _has_dynamo_argument() else {}  # torch 2.4 has no such argument
                torch.onnx.export(module, (example,), str(path), input_names=["input"], output_names=["output"],
                                  opset_version=opset, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                                  **legacy)
    except Exception as exc:  # the exporters raise many types; one line naming the graph
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BundleExportError(f"graph {part.name!r}: the {exporter} exporter failed ({type(exc).__name__}: "
                                f"{first[:300]})") from None


def _check_graph(part: _Part, data: bytes, cases: Sequence[tuple[torch.Tensor, torch.Tensor]], *, rtol: float,
                 atol: float) -> float:
    """Largest ``|ort - torch|`` of the graph over ``cases`` (input, PyTorch output); refuses a graph out of
    tolerance."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for inp, want in cases:
        got = session.run(None, {session.get_inputs()[0].name: inp.numpy()})[0]
        ref = want.numpy()
        if got.shape != ref.shape:
            raise BundleExportError(f"graph {part.name!r}: onnxruntime gives shape {got.shape}, PyTorch {ref.shape}")
        diff = np.abs(got.astype(np.float64) - ref)
        worst = max(worst, float(diff.max()) if diff.size else 0.0)
        if not np.all(diff <= atol + rtol * np.abs(ref)):
            raise BundleExportError(f"graph {part.name!r}: onnxruntime differs from PyTorch by up to {worst:.3g} at "
                                    f"batch {len(inp)} (tolerance {atol:g} + {rtol:g} x |value|)")
    return worst
