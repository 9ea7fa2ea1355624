"""Counted MACs of timm models at 224x224 against the GMACs timm publishes.

For each model: the whole model counted by ``exits.macs`` (FlopCounterMode + fused-attention formula,
MACs = FLOPs / 2), the sum of its per-unit MACs when cut after every block (must equal the whole), and
the stock counter without the attention formula. Random init (MACs do not depend on weights).

Published figures: ``infer_gmacs`` at ``infer_img_size`` 224 in timm's results table
``results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv`` (huggingface/pytorch-image-models):
resnet18 1.82, resnet50 4.11, vit_small_patch16_224 4.61.

Usage: python benchmarks/bench_macs.py [--latency]; figures go to benchmarks/results/macs.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from exits import attach_exits  # noqa: E402
from exits.macs import MACS_COUNTER, count_macs, measure_latency, unit_macs  # noqa: E402

PUBLISHED_GMACS = {"resnet18": 1.82, "resnet50": 4.11, "vit_small_patch16_224": 4.61}
SOURCE = ("timm results table results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv, column infer_gmacs "
          "at infer_img_size 224 (huggingface/pytorch-image-models)")
TOLERANCE = 0.02


def bench_model(name: str, latency: bool) -> dict:
    torch.manual_seed(0)
    model = attach_exits(name, points="blocks", heads="linear", input_size=(3, 224, 224))
    whole = count_macs(model.backbone, (3, 224, 224))
    macs = unit_macs(model)
    segments = sum(v for k, v in macs.items() if k.startswith("segment:"))
    with torch.no_grad(), FlopCounterMode(display=False) as stock:
        model.backbone(torch.zeros(1, 3, 224, 224))
    rel = whole / 1e9 / PUBLISHED_GMACS[name] - 1
    row = {
        "published_gmacs": PUBLISHED_GMACS[name],
        "counted_gmacs": whole / 1e9,
        "sum_of_segments_gmacs": segments / 1e9,
        "stock_counter_gmacs": stock.get_total_flops() / 2 / 1e9,
        "relative_difference": rel,
        "within_2_percent": abs(rel) <= TOLERANCE,
        "n_positions": len(model.exit_points),
        "unit_macs": macs,
    }
    if latency:
        row["latency_s_per_sample_bs32"] = measure_latency(model, batch_size=32, warmup=2, repeats=5)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", action="store_true", help="also measure per-unit latency (batch 32)")
    args = parser.parse_args(argv)
    rows = {name: bench_model(name, args.latency) for name in PUBLISHED_GMACS}
    print(f"{'model':24s} {'published':>9s} {'counted':>8s} {'segments':>8s} {'stock':>8s} {'diff':>7s}")
    for name, r in rows.items():
        print(f"{name:24s} {r['published_gmacs']:9.2f} {r['counted_gmacs']:8.3f} {r['sum_of_segments_gmacs']:8.3f} "
              f"{r['stock_counter_gmacs']:8.3f} {100 * r['relative_difference']:+6.2f}%")
    path = save_results("macs", {
        "software": {"torch": torch.__version__, "timm": __import__("timm").__version__},
        "counter": MACS_COUNTER, "input_size": [3, 224, 224], "published_source": SOURCE,
        "tolerance": TOLERANCE, "models": rows,
    })
    print(f"saved {path}")
    return 0 if all(r["within_2_percent"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
