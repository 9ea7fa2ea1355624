"""The dp front at ImageNet-train scale, through the command line as a user runs it.

``python -m search.pareto CACHE --methods dp --export F.json`` on a memory-mapped cache of 1,280,000
search (and as many holdout) samples x 50 positions x 5 head types (k=2, 1000 classes, about 10 GB),
timed end to end under ``/usr/bin/time -v``: wall time (and CPU time: user + system), maximum resident set size
(memory-mapped pages included) and the number of exported configurations. Then the hypervolume the default subsample fit
loses: on a 200k-sample cache of the same generator, the same command with its defaults (fit on a
subsample) against a fit on every sample (``--subsample-above`` raised), both hypervolumes computed
from the exported search-split numbers. The caches are generated once into folders outside the
repository (the big one takes about 4 minutes here).

``--skip-check-flag FLAG``: when the command line has an option that skips the cache's integrity
check at open, run the command with it too and report the check's time (the difference).

Usage: python benchmarks/bench_scale.py [--cache DIR] [--reference DIR] [--skip-check-flag FLAG];
figures go to benchmarks/results/scale.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._machine import save_results  # noqa: E402
from data_cache import open_cache  # noqa: E402
from data_cache.synthetic import write_synthetic_cache  # noqa: E402
from search.indicators import HV  # noqa: E402

GENERATOR = dict(n_positions=50, n_head_types=5, n_classes=1000, k=2, seed=0)
SCALE_SAMPLES = 2_560_000          # 1.28M search + 1.28M holdout
REFERENCE_SAMPLES = 400_000        # 200k search + 200k holdout


def _ensure(path: Path, n_samples: int) -> None:
    if not (path / "manifest.json").exists():
        t0 = time.perf_counter()
        write_synthetic_cache(path, n_samples, **GENERATOR)
        print(f"generated {path} in {time.perf_counter() - t0:.0f} s", flush=True)


def _cli(args: list[str]) -> dict:
    """Run ``python -m search.pareto ARGS`` under /usr/bin/time -v: wall seconds, peak RSS, stdout."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        cmd = ["/usr/bin/time", "-v", "-o", tf.name, sys.executable, "-m", "search.pareto", *args, "--no-progress"]
        run = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        report = Path(tf.name).read_text()
    if run.returncode != 0:
        raise SystemExit(f"command failed ({run.returncode}): {' '.join(cmd)}\n{run.stderr}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", report).group(1)
    seconds = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1)) * 1024
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): (\S+)", report).group(1)) for kind in ("User", "System"))
    return {"command": "python -m search.pareto " + " ".join(args), "wall_s": seconds, "cpu_s": cpu,
            "peak_rss_bytes": rss, "stdout": run.stdout}


def _export_hv(path: Path) -> tuple[float, int, dict]:
    doc = json.loads(path.read_text())
    F = [[1 - c["search"]["accuracy"], c["search"]["relative_cost"]] for c in doc["configs"]]
    return HV()(F), len(F), doc.get("fit")


def _loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("/work/caches/imagenet_scale"),
                    help="the 1.28M cache (generated there if missing; default %(default)s)")
    ap.add_argument("--reference", type=Path,
                    default=Path(tempfile.gettempdir()) / "exitsearch-bench" / "scale_200k",
                    help="the 200k-sample cache of the same generator (generated if missing; default %(default)s)")
    ap.add_argument("--skip-check-flag", help="option of search.pareto that skips the integrity check at open")
    args = ap.parse_args()
    _ensure(args.cache, SCALE_SAMPLES)
    _ensure(args.reference, REFERENCE_SAMPLES)
    cache = open_cache(args.cache, skip_integrity_check=True)   # described as it is (--cache may name another)
    early = cache.exits[:-1]
    shape = {"search": cache.n_samples("search"), "n_positions": len({e.position for e in early}),
             "n_head_types": len({e.head for e in early}), "n_classes": cache.n_classes, "k": cache.k}
    figures: dict = {"cache": {"path": str(args.cache), **shape}}
    label = f"{shape['search']:,} search samples x {shape['n_positions']} positions x {shape['n_head_types']} heads"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = _cli([str(args.cache), "--methods", "dp", "--export", str(tmp / "F.json")])
        hv, n_configs, fit = _export_hv(tmp / "F.json")
        figures["scale"] = {**{k: v for k, v in run.items() if k != "stdout"}, "configs": n_configs,
                            "hv_search": hv, "fit": fit, "loadavg_after": _loadavg(), "table": run["stdout"]}
        print(run["stdout"])
        print(f"{label}: {run['wall_s']:.1f} s wall end to end ({run['cpu_s']:.1f} s CPU), peak RSS "
              f"{run['peak_rss_bytes'] / 2**30:.2f} GiB, {n_configs} configurations (load average after: "
              f"{' '.join(_loadavg())})", flush=True)
        if args.skip_check_flag:
            fast = _cli([str(args.cache), "--methods", "dp", args.skip_check_flag, "--export", str(tmp / "G.json")])
            figures["scale"]["wall_s_without_check"] = fast["wall_s"]
            figures["scale"]["check_s"] = run["wall_s"] - fast["wall_s"]
            print(f"without the integrity check: {fast['wall_s']:.1f} s (the check: about "
                  f"{run['wall_s'] - fast['wall_s']:.1f} s)", flush=True)
        ref = {}
        for name, extra in (("subsample_fit", []), ("full_fit", ["--subsample-above", str(10 ** 12)])):
            r = _cli([str(args.reference), "--methods", "dp", *extra, "--export", str(tmp / f"{name}.json")])
            hv, n_configs, fit = _export_hv(tmp / f"{name}.json")
            ref[name] = {"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "peak_rss_bytes": r["peak_rss_bytes"],
                         "hv_search": hv, "configs": n_configs, "fit": fit}
            print(f"200k cache, {name}: HV {hv:.5f}, {n_configs} configurations, {r['wall_s']:.1f} s", flush=True)
        ref["hv_loss"] = 1 - ref["subsample_fit"]["hv_search"] / ref["full_fit"]["hv_search"]
        print(f"hypervolume lost by the subsample fit on the 200k cache: {ref['hv_loss']:.4%}")
        figures["reference_200k"] = ref
    print("saved", save_results("scale", figures))


if __name__ == "__main__":
    main()
