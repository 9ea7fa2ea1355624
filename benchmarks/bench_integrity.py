"""The integrity check of a large cache against the search itself, both from the command line.

Runs, one after the other on the same cache (default: the 1.28M-sample scale cache of
``bench_scale.py``, 250 early exits + the final one, k=2, search and holdout):

- ``python -m data_cache.validate CACHE --quiet``: the full check (checksums and every value);
- ``python -m search.pareto CACHE --methods dp --skip-integrity-check``: the search alone;
- ``python -m search.pareto CACHE --methods dp``: what a user runs (the check, then the search).

For each: wall seconds, CPU seconds, peak resident set (``ru_maxrss`` of the child, what
``/usr/bin/time -v`` reports, memory-mapped pages included) and the load average before and after;
then the ratio check / search. The page cache is left as it is (warm after the first command); pass
``--cold`` to drop this cache's pages (``posix_fadvise``) before each command.

Usage: python benchmarks/bench_integrity.py [--cache DIR] [--repeats 2] [--no-search] [--cold] [--results NAME]
Figures go to benchmarks/results/NAME.json (default integrity.json).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._machine import save_results  # noqa: E402
from data_cache.cli_types import positive_float, positive_int  # noqa: E402

DEFAULT_CACHE = Path("/work/caches/imagenet_scale")   # where benchmarks/bench_scale.py generates it by default


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _drop_pages(cache: Path) -> None:
    """Drop this cache's file pages from the page cache (only these files; others keep theirs)."""
    for f in cache.glob("*/*.npy"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _run(argv: list[str], timeout_s: float) -> dict:
    """Run a command line; wall and CPU seconds, peak RSS of the child, exit status, load before/after."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    before = _load()
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        deadline = t0 + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        tail = out.read().decode(errors="replace").strip().splitlines()[-3:]
    return {"argv": argv[1:], "status": proc.returncode, "timed_out": wall > timeout_s, "seconds": round(wall, 2),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "load_before": before, "load_after": _load(), "output_tail": tail}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"cache folder (default {DEFAULT_CACHE})")
    ap.add_argument("--repeats", type=positive_int, default=2, help="runs of each command (default 2; the best counts)")
    ap.add_argument("--no-search", action="store_true", help="time the check only")
    ap.add_argument("--cold", action="store_true", help="drop the cache's pages before each command")
    ap.add_argument("--timeout", type=positive_float, default=900.0, help="seconds before a command is stopped")
    ap.add_argument("--results", default="integrity", help="name of the results file (default integrity)")
    args = ap.parse_args()
    if not (args.cache / "manifest.json").exists():
        sys.exit(f"{args.cache}: no cache there; run benchmarks/bench_scale.py first or pass --cache")
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        commands = {"check": [py, "-m", "data_cache.validate", str(args.cache), "--quiet"]}
        if not args.no_search:
            search = [py, "-m", "search.pareto", str(args.cache), "--methods", "dp", "--no-progress", "--overwrite"]
            commands["search"] = search + ["--skip-integrity-check", "--export", f"{tmp}/search.json"]
            commands["check_and_search"] = search + ["--export", f"{tmp}/default.json"]
        runs: dict[str, list[dict]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, argv in commands.items():
                if args.cold:
                    _drop_pages(args.cache)
                runs[name].append(_run(argv, args.timeout))
                for f in Path(tmp).glob("*.json"):  # so the next run writes its export afresh
                    f.unlink()
                print(f"{name}: {runs[name][-1]['seconds']} s, peak RSS {runs[name][-1]['peak_rss_mb']} MB, "
                      f"status {runs[name][-1]['status']}, load {runs[name][-1]['load_after']}", flush=True)
    best = {name: min((r for r in rs if r["status"] == 0), key=lambda r: r["seconds"], default=None)
            for name, rs in runs.items()}
    files = sorted(args.cache.glob("*/*.npy"))
    figures = {"cache": str(args.cache), "cache_bytes": sum(f.stat().st_size for f in files), "cold": args.cold,
               "runs": runs, "best_seconds": {n: (b or {}).get("seconds") for n, b in best.items()},
               "best_peak_rss_mb": {n: (b or {}).get("peak_rss_mb") for n, b in best.items()}}
    if best.get("search") and best.get("check"):
        figures["check_over_search"] = round(best["check"]["seconds"] / best["search"]["seconds"], 3)
    path = save_results(args.results, figures)
    print(f"best seconds {figures['best_seconds']}; ratio check/search {figures.get('check_over_search')}; "
          f"saved {path}")


if __name__ == "__main__":
    main()
