"""The dp front at ImageNet-train scale: 1,280,000 search samples x 50 positions x 5 head types.

The cache (k=2, 1000 classes, search and holdout splits of 1.28M each, about 10 GB) is generated
once under benchmarks/_caches/ (about 10 minutes here) and memory-mapped. Peak memory is reported
two ways: the process's anonymous memory (sampled every 20 ms: what the search itself allocates)
and VmHWM (which also counts the memory-mapped cache pages the kernel keeps resident).

Usage: python benchmarks/bench_scale.py [--exact] ; figures go to benchmarks/results/scale.json.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import save_results  # noqa: E402
from data_cache import open_cache  # noqa: E402
from data_cache.synthetic import write_synthetic_cache  # noqa: E402
from search import ExitProblem, create_engine, run_search  # noqa: E402
from search.indicators import HV  # noqa: E402

CACHE = Path(__file__).parent / "_caches" / "imagenet_scale"


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class PeakAnon:
    """Samples RssAnon in a thread; ``peak`` in bytes."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _status("RssAnon"))
            time.sleep(0.02)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exact", action="store_true", help="also fit on every sample (slow: minutes)")
    ap.add_argument("--subsample", type=int, default=32768, help="dp subsample size (default 32768)")
    args = ap.parse_args()
    if not (CACHE / "manifest.json").exists():
        t0 = time.perf_counter()
        write_synthetic_cache(CACHE, 2_560_000, 50, n_head_types=5, n_classes=1000, k=2, seed=0,
                              overwrite=True, chunk=1 << 16)
        print(f"generated the cache in {time.perf_counter() - t0:.0f} s")
    figures = {"cache": {"search": 1_280_000, "positions": 50, "head_types": 5, "k": 2, "classes": 1000}}
    with PeakAnon() as peak:
        t0 = time.perf_counter()
        cache = open_cache(CACHE)
        problem = ExitProblem(cache)
        t_problem = time.perf_counter() - t0
        runs = {}
        variants = [("dp_subsample", create_engine("dp", subsample=args.subsample))]
        if args.exact:
            variants.append(("dp_exact", create_engine("dp")))
        for name, engine in variants:
            t1 = time.perf_counter()
            front = run_search(problem, engine)
            runs[name] = {"seconds_search": time.perf_counter() - t1, "points": len(front),
                          "hv_search": HV()(front.F), "message": front.message}
            print(f"{name}: {runs[name]['seconds_search']:.1f} s search + {t_problem:.1f} s loading scores, "
                  f"{len(front)} configurations, HV {runs[name]['hv_search']:.4f}; {front.message}", flush=True)
    figures.update(seconds_load_scores=t_problem, runs=runs, peak_anon_bytes=peak.peak,
                   vm_hwm_bytes=_status("VmHWM"))
    print(f"peak anonymous memory {peak.peak / 2**30:.2f} GiB; VmHWM (with mapped cache pages) "
          f"{figures['vm_hwm_bytes'] / 2**30:.2f} GiB")
    print("saved", save_results("scale", figures))


if __name__ == "__main__":
    main()
