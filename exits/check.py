"""``python -m exits.check MODEL``: can exits be attached to this timm model, exactly? One command.

Builds the model (random init unless ``--pretrained``), attaches exits (``points="blocks"`` by default)
with the exactness probe, and reports: which plan cut it (per-class or generic), every exit position
(module, layout, channels, stride) and what its boundary hands on, then three checks on a fresh random
batch: the segments run in order equal ``model(x)`` bit for bit; dropping a row mid-way leaves the other
rows' logits unchanged (the runtime's compaction); the units' MACs sum to the whole model's. A model
that cannot be cut exactly is one line naming it and the reason, exit status 2::

    python -m exits.check convnext_atto
    python -m exits.check efficientvit_b0 --input-size 128 --points stages
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .model import ExitModel

__all__ = ["CheckReport", "check_model", "segments_equal_forward", "compaction_keeps_rows", "main"]


@dataclass
class CheckReport:
    """What ``check_model`` found: the plan's family, seconds to attach, positions, the three checks."""

    model_name: str
    family: str
    attach_s: float
    input_size: tuple[int, ...]
    points: list[dict[str, Any]] = field(default_factory=list)
    bit_identical: bool = False
    compaction_ok: bool = False
    gmacs: float = 0.0
    macs_sum_ok: bool = False
    num_classes: int = 0
    pretrained: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.points) and self.bit_identical and self.compaction_ok and self.macs_sum_ok


def _run_segments(model: ExitModel, x: torch.Tensor, drop_at: int | None = None,
                  rows: torch.Tensor | None = None) -> torch.Tensor:
    h = x
    for i, seg in enumerate(model.segments):
        h = seg(h)
        if i == drop_at:
            assert rows is not None  # the callers pass rows with drop_at
            h = seg.select(h, rows)
    return h


def _random_batch(model: ExitModel, n: int, seed: int) -> torch.Tensor:
    """A seeded standard-normal batch of ``n`` images on the backbone's device."""
    device = next(model.backbone.parameters()).device
    return torch.randn(n, *model.input_size, generator=torch.Generator().manual_seed(seed)).to(device)


@torch.no_grad()
def segments_equal_forward(model: ExitModel, *, seed: int = 1) -> bool:
    """The backbone's segments in order equal its own forward bit for bit on a random batch of 2 (on the
    backbone's device)."""
    x = _random_batch(model, 2, seed)
    return bool(torch.equal(_run_segments(model, x), model.backbone(x)))


@torch.no_grad()
def compaction_keeps_rows(model: ExitModel, *, seed: int = 2) -> bool:
    """Drop the middle row of 3 after the segment that hands on the most values (the runtime's
    ``Segment.select``); the other rows' final logits match the full batch's (up to kernel rounding), on the
    backbone's device."""
    segs = model.segments[:-1]
    if not segs:
        return True
    at = max(range(len(segs)), key=lambda i: (len(segs[i].out_spec.leaves or ()), -abs(i - len(segs) // 2)))
    x = _random_batch(model, 3, seed)
    keep = torch.tensor([0, 2], device=x.device)
    full = _run_segments(model, x)[keep]
    part = _run_segments(model, x, at, keep)
    scale = max(float(full.abs().max()), 1.0)
    return part.shape == full.shape and bool(torch.allclose(part, full, rtol=1e-4, atol=1e-5 * scale))


def check_model(backbone: torch.nn.Module | str, *, points: str | Sequence[str] = "blocks",
                input_size: Sequence[int] | None = None, **timm_kwargs: Any) -> tuple[ExitModel, CheckReport]:
    """Attach linear exits to ``backbone`` (a module or a timm name) and run the checks; raises
    ``ExitsError`` (one line) when it cannot be cut exactly."""
    from .macs import count_macs, unit_macs

    name = None
    if isinstance(backbone, str):
        from .model import create_backbone

        name, backbone = backbone, create_backbone(backbone, **timm_kwargs)
    t0 = time.perf_counter()
    model = ExitModel(backbone, points=points, heads=("linear",), input_size=input_size, model_name=name)
    attach_s = time.perf_counter() - t0
    specs = {seg.position: seg.out_spec.describe() for seg in model.segments}
    report = CheckReport(model.model_name, model.plan.family, attach_s, tuple(model.input_size), [
        {"position": p.position, "module": p.module, "layout": p.layout, "num_chs": p.num_chs,
         "reduction": p.reduction, "hands_on": specs[p.position]} for p in model.exit_points])
    report.bit_identical = segments_equal_forward(model)
    report.compaction_ok = compaction_keeps_rows(model)
    macs = unit_macs(model)
    whole = count_macs(model.backbone, model.input_size)
    report.gmacs = whole / 1e9
    report.num_classes, report.pretrained = model.num_classes, bool(timm_kwargs.get("pretrained"))
    report.macs_sum_ok = math.isclose(sum(v for k, v in macs.items() if k.startswith("segment:")), whole,
                                      rel_tol=1e-9)
    return model, report


def _parser() -> argparse.ArgumentParser:
    from data_cache.cli_types import CommandParser, int_at_least, positive_int, threads

    p = CommandParser(prog="python -m exits.check",
                      description="Check that exits attach to a timm model with an exact cut.")
    p.add_argument("model", help="timm model name")
    p.add_argument("--points", default="blocks", help="'blocks', 'stages' or comma-separated module names")
    p.add_argument("--input-size", type=positive_int, default=None, help="input resolution (default: the model's)")
    p.add_argument("--pretrained", action="store_true", help="timm's pretrained weights (needs them cached)")
    p.add_argument("--num-classes", type=int_at_least(1), default=None,
                   help="classes of the heads you will train (default: the --dataset's, else the model's own, "
                        "usually 1000); MACs are counted for this head size")
    p.add_argument("--dataset", default=None, help="the dataset you will train on: its classes set --num-classes")
    p.add_argument("--threads", type=threads, default=None, help="torch intra-op threads")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _num_classes(args: argparse.Namespace) -> int | None:
    """--num-classes, else the --dataset's classes (None: the model's own head)."""
    if args.num_classes is not None or args.dataset is None:
        return args.num_classes
    from .data import dataset_classes

    return dataset_classes(args.dataset)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every check passes, 1 when one fails, 2 with one line when the model is refused."""
    from data_cache.outputs import cli_entry

    from .errors import ExitsError

    parser = _parser()
    args = parser.parse_args(argv)
    points = args.points if args.points in ("blocks", "stages") else [v for v in args.points.split(",") if v]
    if not points:
        parser.error(f"argument --points: {args.points!r} names no module; use 'blocks', 'stages' or module names")
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (3, args.input_size, args.input_size) if args.input_size else None
    try:
        num_classes = _num_classes(args)
        _, report = check_model(args.model, points=points, input_size=size, num_classes=num_classes,
                                pretrained=args.pretrained or None)
    except ExitsError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def show() -> int:
        r = report
        print(f"{r.model_name}: {r.family} plan, {len(r.points)} exit positions at {r.input_size[1]} px, "
              f"attached in {r.attach_s:.2f} s (exactness probe passed)")
        for p in r.points:
            print(f"  {p['position']:3d} {p['module']:<36s} {p['layout']:<4s} {p['num_chs']:5d} ch  "
                  f"stride {p['reduction']:<3d} hands on: {p['hands_on']}")
        marks = {True: "ok", False: "FAILED"}
        print(f"segments in order == model(x) bit for bit: {marks[r.bit_identical]}")
        print(f"dropping a row mid-way keeps the other rows: {marks[r.compaction_ok]}")
        print(f"MACs: {r.gmacs:.4f} G per image with a {r.num_classes}-class classifier; segments sum to the whole: "
              f"{marks[r.macs_sum_ok]}")
        if args.num_classes is None and args.dataset is None:
            print(f"note: {r.num_classes} classes is the model's own head; pass --num-classes N (or --dataset NAME) "
                  "for the head size you will train, which changes the MACs")
        if not r.pretrained:
            print("weights: random init (the cut and MACs do not depend on them; --pretrained loads timm's)")
        return 0 if r.ok else 1

    return cli_entry(show)


if __name__ == "__main__":
    sys.exit(main())
