"""Do MACs saved by early exits become time saved? Per backbone, on the CPU, with the real runtime.

For each candidate backbone (random init: timing does not depend on the weights) with ``linear`` and
``mlp`` heads after every block, one exit profile is imposed: thresholds are set on a calibration run so
that 24.5% / 10.7% / 33.5% / 27.7% of the samples leave at blocks 1 / 3 / 5 / 7 of 8 (the profile of the
first demo configuration). ``ExitRuntime`` then runs that configuration and the plain base model over the
same batches of 64, alternating, on one thread; the figure of merit is

    ratio = measured throughput speedup / (1 / relative MACs)

which issue 4 requires to be >= 0.8 on the demo. This chose the demo's backbone (``exits/pipeline.py``)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_time_vs_macs.py

Writes ``benchmarks/results/time_vs_macs.json``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: shared machines

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from data_cache.cli_types import positive_int, threads  # noqa: E402

PROFILE = ((0, "mlp", 0.245), (2, "mlp", 0.107), (4, "mlp", 0.335), (6, "linear", 0.277))
VIT = {"patch_size": 4, "in_chans": 1, "embed_dim": 64, "depth": 8, "num_heads": 2, "mlp_ratio": 2,
       "class_token": False, "global_pool": "avg"}
CANDIDATES = (
    ("resnet18 [32,64,128,256] at 28x28 (the first demo)", "resnet18",
     {"in_chans": 1, "channels": [32, 64, 128, 256]}, 28),
    ("resnet18 [32,64,128,256] at 40x40", "resnet18", {"in_chans": 1, "channels": [32, 64, 128, 256]}, 40),
    ("resnet18 [32,64,128,256] at 56x56", "resnet18", {"in_chans": 1, "channels": [32, 64, 128, 256]}, 56),
    ("resnet18 [16,32,64,128] at 56x56", "resnet18", {"in_chans": 1, "channels": [16, 32, 64, 128]}, 56),
    ("ViT 4x4 patches, width 64, 8 blocks at 28x28 (the demo)", "vit_tiny_patch16_224", dict(VIT, img_size=28), 28),
)


def _config(model, runtime, xs):
    """Thresholds at the quantiles that make PROFILE's fractions leave (of all samples)."""
    import torch

    from contract import ExitConfig
    from exits.runtime import exit_scores

    wanted = {pos: (head, frac) for pos, head, frac in PROFILE}
    alive = torch.ones(len(xs), dtype=torch.bool)
    enabled = []
    with torch.inference_mode():
        h = runtime._input(xs)
        for seg in model.segments[:-1]:
            h = seg(h)
            if seg.position not in wanted:
                continue
            head, frac = wanted[seg.position]
            spec = next(e for e in model.exits if e.position == seg.position and e.head == head)
            score, _ = exit_scores(model.heads[spec.key](h), "max_prob")
            score = score.double().masked_fill(~alive, -1.0)
            k = int(round(frac * len(xs)))
            threshold = float(score[alive].sort(descending=True).values[k])
            alive &= ~(score > threshold)
            enabled.append((model.exits.index(spec), threshold))
    return ExitConfig(tuple(e for e, _ in enabled), tuple(t for _, t in enabled), "max_prob", id="profile")


def measure(label: str, name: str, kwargs: dict, size: int, *, n: int, rounds: int) -> dict:
    import statistics

    import torch

    from exits.model import ExitModel, create_backbone
    from exits.runtime import ExitRuntime

    torch.manual_seed(0)
    backbone = create_backbone(name, num_classes=10, **kwargs)
    model = ExitModel(backbone, points="blocks", heads=("linear", "mlp"), num_classes=10, input_size=(1, size, size),
                      model_name=name)
    runtime = ExitRuntime(model, channels_last=name.startswith("resnet"))
    xs = torch.randn(n, 1, size, size)
    config = _config(model, runtime, xs)
    relative = runtime.run(xs, config).relative_cost
    batches = list(xs.split(64))

    def seconds(fn) -> float:
        t = time.perf_counter()
        for b in batches:
            fn(b)
        return time.perf_counter() - t

    seconds(runtime.base_forward), seconds(lambda b: runtime.run(b, config))  # warm-up
    pairs = [(seconds(runtime.base_forward), seconds(lambda b: runtime.run(b, config))) for _ in range(rounds)]
    speedup = statistics.median(b / r for b, r in pairs)
    base_us = 1e6 * statistics.median(b for b, _ in pairs) / n
    row = {"label": label, "model": name, "timm_kwargs": kwargs, "input": size, "base_mmacs": runtime.base_macs / 1e6,
           "base_us_per_image_b64": base_us, "relative_macs": relative, "mac_estimate_speedup": 1 / relative,
           "throughput_speedup_b64": speedup, "ratio": speedup * relative}
    print(f"{label:<58} {row['base_mmacs']:6.1f} MMACs {base_us:5.0f} us/img  rel MACs {relative:.3f}  "
          f"MAC estimate {1 / relative:.2f}x  measured {speedup:.2f}x  ratio {row['ratio']:.2f}", flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=positive_int, default=2048)
    p.add_argument("--rounds", type=positive_int, default=5)
    p.add_argument("--threads", type=threads, default=1)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = [measure(*c, n=args.samples, rounds=args.rounds) for c in CANDIDATES]
    path = save_results("time_vs_macs", {"threads": args.threads, "batch_size": 64, "samples": args.samples,
                                         "rounds": args.rounds, "exit_profile": PROFILE,
                                         "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "rows": rows})
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
