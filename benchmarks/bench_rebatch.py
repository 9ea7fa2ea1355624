"""Plain compaction against re-batching (``run_batches(..., rebatch=True)``), and the runtime loop before and after
the overhead cuts, on the Fashion-MNIST demo's certified configuration (the bundled cache and checkpoint).

Per runtime (eager ``ExitRuntime``, onnxruntime ``BundleRouter`` on a bundle exported here with the torchscript
exporter) and thread count, in rounds whose order is reversed every other round: the base model, the configuration
with plain compaction, the configuration re-batched (every segment waits for a full batch of survivors), and for the
eager runtime the loop of an older revision (``--baseline-rev``, loaded from git) on the same model. Throughput at
batch 64 over ``--images`` holdout images; median latency at batch 1 over ``--latency-images``. Ratios are taken
within a round, then the median over rounds (and the ratio of the totals)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_rebatch.py [--rounds 5] [--threads 1 2]

Writes ``benchmarks/results/rebatch.json`` (machine, load average before and after).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: shared machines

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._machine import save_results  # noqa: E402
from data_cache.cli_types import positive_int  # noqa: E402
from data_cache.cli_types import threads as thread_count  # noqa: E402

CACHE = ROOT / "data_cache/bundled/fashion_mnist"
CHECKPOINT = ROOT / "data_cache/bundled/fashion_mnist.checkpoint.pt"


def _load() -> float:
    return os.getloadavg()[0]


def _old_runtime_class(rev: str) -> Any:
    """``ExitRuntime`` as revision ``rev`` wrote it, imported inside the ``exits`` package (its relative imports)."""
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:exits/runtime.py"], check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "runtime_old.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("exits._runtime_old", path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "exits"
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.ExitRuntime


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _rounds(cases: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds per case per round, the order reversed every other round; one warm-up call each."""
    for fn in cases.values():
        fn()
    out: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(rounds):
        for name in (list(cases) if r % 2 == 0 else list(reversed(cases))):
            out[name].append(_timed(cases[name]))
    return out


def _ratios(times: dict[str, list[float]], num: str, den: str) -> dict[str, float]:
    """Speed-up of ``den`` over ``num`` (time num / time den) per round: median, min, max; and of the totals."""
    r = [a / b for a, b in zip(times[num], times[den], strict=True)]
    return {"median": statistics.median(r), "min": min(r), "max": max(r), "total": sum(times[num]) / sum(times[den])}


def _latency(run: Callable[[Any], Any], xs: list[Any]) -> float:
    """Median seconds of one batch-1 call."""
    run(xs[0])
    return statistics.median(_timed(lambda x=x: run(x)) for x in xs)


def _paired(before: Callable[[Any], Any], after: Callable[[Any], Any], xs: list[Any]) -> float:
    """Total time of ``before`` / total time of ``after``, the two alternating batch by batch (the finest pairing
    against a changing load)."""
    t = [0.0, 0.0]
    for i, x in enumerate(xs):
        for j in ((0, 1) if i % 2 else (1, 0)):
            t[j] += _timed(lambda fn=(before, after)[j], x=x: fn(x))
    return t[0] / t[1]


def _section(cases: dict, single: dict, n_images: int, rounds: int, base: str, plain: str) -> dict:
    """Throughput cases at batch 64 and batch-1 latency cases, timed and summarised."""
    times = _rounds(cases, rounds)
    out = {"images_per_s": {k: n_images / statistics.median(v) for k, v in times.items()},
           "speedup_over_base": {k: _ratios(times, base, k) for k in cases if k != base},
           "speedup_over_plain": {k: _ratios(times, plain, k) for k in cases if k not in (base, plain)}}
    lat: dict[str, list[float]] = {k: [] for k in single}
    for r in range(rounds):
        for name in (list(single) if r % 2 == 0 else list(reversed(single))):
            lat[name].append(single[name]())
    out["latency_b1_ms"] = {k: 1000 * statistics.median(v) for k, v in lat.items()}
    out["latency_b1_speedup_over_base"] = {k: _ratios(lat, base, k) for k in single if k != base}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=positive_int, default=5)
    p.add_argument("--threads", type=thread_count, nargs="+", default=[1, 2])
    p.add_argument("--images", type=positive_int, default=2048)
    p.add_argument("--latency-images", type=positive_int, default=200)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--baseline-rev", default="989df11", help="git revision whose exits/runtime.py is the 'before'")
    p.add_argument("--no-bundle", action="store_true")
    args = p.parse_args()

    import numpy as np
    import torch

    from bundle import open_bundle
    from data_cache import open_cache
    from exits.checkpoints import read_checkpoint
    from exits.export_bundle import export_bundle
    from exits.runtime import ExitRuntime
    from exits.validation_inputs import split_rows

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp())
    choice = tmp / "choice.json"
    subprocess.run([sys.executable, "-m", "search.pareto", str(CACHE), "--max-drop", "0.5", "--export-choice",
                    str(choice)], check=True, capture_output=True, cwd=ROOT)
    cache = open_cache(CACHE)
    ckpt = read_checkpoint(CHECKPOINT)
    rows = split_rows("holdout", cache, ckpt)
    n = args.images + args.latency_images
    xs = torch.stack([rows[i][0] for i in range(n)])
    big = [xs[i:i + args.batch_size] for i in range(0, args.images, args.batch_size)]
    ones = [xs[args.images + i:args.images + i + 1] for i in range(args.latency_images)]
    rt = ExitRuntime.from_checkpoint(ckpt, choice, cache=cache, check_inputs=False)
    old = _old_runtime_class(args.baseline_rev).from_checkpoint(ckpt, choice, cache=cache, check_inputs=False)
    results: dict[str, Any] = {"configuration": rt.config.id, "relative_macs": rt.config.relative_cost("holdout"),
                               "batch_size": args.batch_size, "images": args.images, "rounds": args.rounds,
                               "baseline_rev": args.baseline_rev, "torch": torch.__version__, "eager": {}, "bundle": {}}
    results["mac_estimate_speedup"] = 1 / results["relative_macs"]
    if not args.no_bundle:
        export_bundle(rt.model, choice, tmp / "bundle", cache=cache, exporter="torchscript",
                      data_config=ckpt["data_config"], announce=False)
    for t in args.threads:
        torch.set_num_threads(t)
        eager = {"base": lambda: [rt.base_forward(b) for b in big],
                 "plain": lambda: rt.run_batches(big),
                 "rebatch": lambda: rt.run_batches(big, rebatch=True),
                 "before": lambda: [old.run(b) for b in big]}
        single = {"base": lambda: _latency(rt.base_forward, ones), "plain": lambda: _latency(rt.run, ones),
                  "before": lambda: _latency(old.run, ones)}
        results["eager"][f"threads_{t}"] = dict(_section(eager, single, args.images, args.rounds, "base", "plain"),
                                                before_over_after_paired={"batch_64": _paired(old.run, rt.run, big),
                                                                          "batch_1": _paired(old.run, rt.run, ones)},
                                                load=_load())
        print(f"eager, {t} thread(s): {results['eager'][f'threads_{t}']}", file=sys.stderr)
        if args.no_bundle:
            continue
        router = open_bundle(tmp / "bundle", threads=t)
        router.set_config(0)
        nb, no = [b.numpy() for b in big], [o.numpy() for o in ones]
        base = router.base_config  # config=None would mean the current configuration
        onnx = {"base": lambda r=router, nb=nb, base=base: r.run_batches(nb, base),
                "plain": lambda r=router, nb=nb: r.run_batches(nb),
                "rebatch": lambda r=router, nb=nb: r.run_batches(nb, rebatch=True)}
        single = {"base": lambda r=router, no=no, base=base: _latency(lambda x: r.run(x, base), no),
                  "plain": lambda r=router, no=no: _latency(r.run, no)}
        results["bundle"][f"threads_{t}"] = dict(_section(onnx, single, args.images, args.rounds, "base", "plain"),
                                                 load=_load())
        print(f"bundle, {t} thread(s): {results['bundle'][f'threads_{t}']}", file=sys.stderr)
    results["loadavg_before"], results["loadavg_after"] = list(load_before), list(os.getloadavg())
    np.testing.assert_array_equal(rt.run_batches(big).exits.numpy(), rt.run_batches(big, rebatch=True).exits.numpy())
    print(save_results("rebatch", results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
