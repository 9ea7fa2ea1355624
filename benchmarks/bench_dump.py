"""Dump overhead against a plain backbone forward, and the dump's peak memory at two dataset sizes.

1. Throughput: resnet50 (random init, 1000 classes) with a linear head after every block (16 positions,
   17 exits). Side by side in one process, in alternating order, on the same two synthetic batches: the
   plain backbone forward (``model.backbone(x)`` under ``inference_mode``, as a user would run it) against
   ``exits.dump.dump_cache`` (every exit's forward, softmax, top-5, shards written, deterministic fp32).
   The dump's batch loop is timed between its progress calls (one batch per split); end to end adds its
   fixed costs (MAC counting, writer set-up, assembly and validation of the cache). Reported: the median
   over rounds of the paired ratio plain time / dump time (robust to load drifts on a shared machine) and
   the best-of ratio. Target: dump throughput >= 1/1.15 of plain (ratio >= 0.870).
2. Memory: resnet10t at 32 px, 1000 classes, float16 logits on (about 10 kB per sample on disk), dumped
   in a fresh subprocess per dataset size from a dataset that makes each sample on the fly. Reported:
   peak RSS (``ru_maxrss``) at the end of the streaming loop and after assembly, and tracemalloc's peak.

Usage: python benchmarks/bench_dump.py [--res 96 --batch 32 --rounds 9 --sizes 1000 6000];
figures go to benchmarks/results/dump.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._machine import save_results  # noqa: E402
from data_cache.cli_types import positive_int  # noqa: E402
from exits import attach_exits  # noqa: E402
from exits.data import TensorDataset  # noqa: E402
from exits.dump import dump_cache  # noqa: E402

TARGET = 1 / 1.15


class _Synthetic(torch.utils.data.Dataset):
    """``n`` samples made on demand from their index (nothing held in memory)."""

    def __init__(self, n: int, size: int):
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        return torch.randn(3, self.size, self.size, generator=g), i % 1000, i


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput(res: int, batch: int, rounds: int) -> dict:
    torch.manual_seed(0)
    model = attach_exits("resnet50", points="blocks", heads="linear", input_size=(3, res, res)).eval()
    n = 2 * batch  # one batch per split
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, res, res, generator=g)
    data = TensorDataset(images, torch.randint(0, 1000, (n,), generator=g))
    splits = {"search": TensorDataset(images[:batch], data.labels[:batch]),
              "holdout": TensorDataset(images[batch:], data.labels[batch:])}
    loader = torch.utils.data.DataLoader(data, batch_size=batch)
    with torch.inference_mode():  # warm-up both paths
        model.backbone(images[:batch])
        model.forward_exits(images[:batch])

    def plain() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for x, _, _ in loader:
                model.backbone(x)
        return time.perf_counter() - t0

    def dump(out: Path) -> tuple[float, float]:
        marks: list[float] = []
        t0 = time.perf_counter()
        dump_cache(model, splits, out, k=5, batch_size=batch,
                   progress=lambda s, d, t: marks.append(time.perf_counter()))
        total = time.perf_counter() - t0
        # marks: search start, after its batch, holdout start, after its batch
        return (marks[1] - marks[0]) + (marks[3] - marks[2]), total

    plain_s, loop_s, total_s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):  # side by side; the order alternates so drifts in load hit both sides
            if r % 2:
                loop, total = dump(Path(tmp) / f"c{r}")
                p = plain()
            else:
                p = plain()
                loop, total = dump(Path(tmp) / f"c{r}")
            plain_s.append(p)
            loop_s.append(loop)
            total_s.append(total)
    paired = [p / q for p, q in zip(plain_s, loop_s, strict=True)]
    return {
        "model": "resnet50 (random init, 1000 classes), linear heads after every block",
        "n_exits": len(model.exits), "resolution": res, "batch_size": batch, "samples_per_round": n,
        "rounds": rounds, "threads": torch.get_num_threads(),
        "plain_s": plain_s, "dump_loop_s": loop_s, "dump_total_s": total_s,
        "plain_img_per_s_best": n / min(plain_s), "dump_img_per_s_best": n / min(loop_s),
        "ratio_paired_median": statistics.median(paired), "ratio_best": min(plain_s) / min(loop_s),
        "ratio_end_to_end_median": statistics.median(p / t for p, t in zip(plain_s, total_s, strict=True)),
        "target_ratio": TARGET, "meets_target": statistics.median(paired) >= TARGET,
    }


def memory_child(n: int, out: str) -> dict:
    import tracemalloc

    torch.manual_seed(0)
    model = attach_exits("resnet10t", points="blocks", heads="linear", input_size=(3, 32, 32)).eval()
    half = n // 2
    splits = {"search": _Synthetic(half, 32), "holdout": _Synthetic(n - half, 32)}
    tracemalloc.start()
    stream = []

    def progress(split: str, done: int, total: int) -> None:
        if split == "holdout" and done == total:
            stream.append((_maxrss_mb(), tracemalloc.get_traced_memory()[1] / 2**20))

    t0 = time.perf_counter()
    cache = dump_cache(model, splits, out, k=5, with_logits=True, batch_size=128, progress=progress)
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    return {"n_samples": n, "n_exits": len(model.exits), "cache_mb": cache.nbytes() / 2**20,
            "peak_rss_mb_streaming": stream[-1][0], "peak_rss_mb_total": _maxrss_mb(),
            "tracemalloc_peak_mb_streaming": stream[-1][1], "tracemalloc_peak_mb_total": traced_peak / 2**20,
            "seconds": seconds}


def memory(sizes: list[int]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            proc = subprocess.run([sys.executable, __file__, "--memory-child", str(n), str(Path(tmp) / f"m{n}")],
                                  capture_output=True, text=True, check=True, cwd=ROOT)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--res", type=positive_int, default=96)
    p.add_argument("--batch", type=positive_int, default=32)
    p.add_argument("--rounds", type=positive_int, default=9)
    p.add_argument("--sizes", type=positive_int, nargs=2, default=[1000, 6000])
    p.add_argument("--memory-child", nargs=2, metavar=("N", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(int(args.memory_child[0]), args.memory_child[1])))
        return 0
    tp = throughput(args.res, args.batch, args.rounds)
    mem = memory(args.sizes)
    growth = mem[1]["peak_rss_mb_streaming"] - mem[0]["peak_rss_mb_streaming"]
    path = save_results("dump", {
        "throughput": tp,
        "memory": {"model": "resnet10t at 32 px, 1000 classes, float16 logits, batch 128", "runs": mem,
                   "rss_growth_mb_streaming": growth,
                   "cache_growth_mb": mem[1]["cache_mb"] - mem[0]["cache_mb"]},
        "torch": torch.__version__,
    })
    print(f"plain {tp['plain_img_per_s_best']:.1f} img/s, dump {tp['dump_img_per_s_best']:.1f} img/s (best rounds); "
          f"throughput ratio dump/plain: median of paired rounds {tp['ratio_paired_median']:.3f}, best-of "
          f"{tp['ratio_best']:.3f}, end to end {tp['ratio_end_to_end_median']:.3f}; target >= {TARGET:.3f}")
    for row in mem:
        print(f"{row['n_samples']} samples: cache {row['cache_mb']:.1f} MB, "
              f"peak RSS {row['peak_rss_mb_streaming']:.0f} MB "
              f"streaming / {row['peak_rss_mb_total']:.0f} MB total; tracemalloc peak "
              f"{row['tracemalloc_peak_mb_streaming']:.1f} MB streaming / "
              f"{row['tracemalloc_peak_mb_total']:.1f} MB total")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
