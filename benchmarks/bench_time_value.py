"""What searching on time buys: the certified answer chosen on predicted time against the one chosen on MACs,
both timed on this machine in the same run (issue 17, "value of the time objective").

As a user runs it, on a copy of the bundled demo cache:

1. ``python -m exits.profile --checkpoint CKPT --cache CACHE --name cpu-t1-b64 --threads 1 --batch-size 64``;
2. for each asked drop (0.5 and 1 point) and batch size B (1 and 64):
   ``python -m search.pareto CACHE --objective time --cost-table cpu-t1-b64 --batch-size B --max-drop D
   --export-choice time.json`` and ``python -m search.pareto CACHE --max-drop D --export-choice macs.json``
   (the default MAC objective);
3. both answers and the base model run on the Fashion-MNIST holdout images through ``exits.ExitRuntime`` at
   batch B on one thread, the three in rotating order in each of ``--rounds`` rounds over the same batches;
   medians of ms per sample. The predicted time of each answer (the table at B) is listed beside it.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_time_value.py [--rounds 7] [--rebatch]

Writes ``benchmarks/results/time_value.json`` with the machine and the load average before and after.
``--rebatch``: re-batched serving at batch 64 instead (``search.pareto ... --rebatch`` for the time answer; both
answers served through ``run_batches(..., rebatch=True)``, the base model batch by batch), written to
``time_value_rebatch.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: shared machines

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._machine import save_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLE = "cpu-t1-b64"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


def _choose(cache: Path, out: Path, drop: float, batch: int, rebatch: bool) -> dict[str, Path]:
    """The certified answers chosen on time (the table at ``batch``, re-batched or not) and on MACs, as exported by
    the command."""
    files = {"time": out / f"time_{drop:g}_b{batch}.json", "macs": out / f"macs_{drop:g}.json"}
    _cli("search.pareto", str(cache), "--objective", "time", "--cost-table", TABLE, "--batch-size", str(batch),
         "--max-drop", str(drop), "--export-choice", str(files["time"]), "--no-progress", "--overwrite",
         *(["--rebatch"] if rebatch else []))
    if not files["macs"].exists():
        _cli("search.pareto", str(cache), "--max-drop", str(drop), "--export-choice", str(files["macs"]),
             "--no-progress")
    return files


def _by_kind(model: Any, items: dict[str, float]) -> dict[str, float]:
    """Predicted ms per sample by item kind (segments, heads, steps, the final scoring, the per-batch cost)."""
    kinds = {it.name: it.kind for it in model.table.items}
    out: dict[str, float] = {}
    for name, seconds in items.items():
        out[kinds[name]] = out.get(kinds[name], 0.0) + 1e3 * seconds
    return out


def _time_rotating(fns: dict[str, Any], batches: list[torch.Tensor], rounds: int) -> dict[str, float]:
    """Median seconds per sample of each function over ``batches`` (each takes the whole list), the functions in
    rotating order per round."""
    names, times = list(fns), {k: [] for k in fns}
    n = sum(len(b) for b in batches)
    with torch.inference_mode():
        for name in names:  # warm-up
            fns[name](batches[:4])
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                t0 = time.perf_counter()
                fns[name](batches)
                times[name].append((time.perf_counter() - t0) / n)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--fashion-mnist", default=str(FASHION))
    p.add_argument("--samples", type=int, default=2048, help="rows timed at batch 64 (batch 1: a tenth)")
    p.add_argument("--rebatch", action="store_true", help="re-batched serving at batch 64 (time_value_rebatch.json)")
    args = p.parse_args(argv)
    from benchmarks.device_check import DEMO_CHECKPOINT, holdout_images
    from data_cache import open_cache
    from data_cache.bundled import bundled_cache_path
    from exits.checkpoints import model_from_checkpoint, read_checkpoint
    from exits.measure import timing_batches
    from exits.runtime import ExitRuntime
    from search import ExitProblem
    from search.time_cost import TimeCostModel

    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    load = {"before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp) / "fashion_mnist"
        shutil.copytree(bundled_cache_path(), cache_dir)
        t0 = time.perf_counter()
        _cli("exits.profile", "--checkpoint", str(DEMO_CHECKPOINT), "--cache", str(cache_dir), "--name", TABLE,
             "--threads", "1", "--batch-size", "64", "--quiet")
        profile_s = time.perf_counter() - t0
        cache = open_cache(cache_dir)
        ckpt = read_checkpoint(DEMO_CHECKPOINT)
        model = model_from_checkpoint(ckpt)
        holdout = ExitProblem(cache, "holdout")
        x, _ = holdout_images(Path(args.fashion_mnist), ckpt["data_config"],
                              np.asarray(cache.sample_index("holdout")))
        for batch in (64,) if args.rebatch else (1, 64):
            n = args.samples // 10 if batch == 1 else args.samples
            batches = timing_batches(x, batch, n)
            timed = np.arange(len(batches) * batch) % len(x)
            tm = TimeCostModel.from_cache(cache, TABLE, batch_size=batch, rebatch=args.rebatch)
            for drop in (0.5, 1.0):
                files = _choose(cache_dir, Path(tmp), drop, batch, args.rebatch)
                runtimes = {k: ExitRuntime(model, json.loads(f.read_text()), cache=cache, check_inputs=False)
                            for k, f in files.items()}
                configs = {k: rt.configs[0] for k, rt in runtimes.items()}
                base = runtimes["macs"].base_forward
                fns = {"base": lambda bs, base=base: [base(b) for b in bs],
                       **{f"chosen on {k}": (lambda bs, rt=rt, c=configs[k]: rt.run_batches(bs, c, rebatch=True))
                          if args.rebatch else (lambda bs, rt=rt, c=configs[k]: [rt.run(b, c) for b in bs])
                          for k, rt in runtimes.items()}}
                measured = _time_rotating(fns, batches, args.rounds)
                row: dict[str, Any] = {"batch": batch, "rebatch": args.rebatch, "max_drop": drop,
                                       "loadavg": os.getloadavg(),
                                       "base_ms_per_sample": 1e3 * measured["base"]}
                for k, c in configs.items():
                    est = tm.estimate(c.exits, holdout.assign(c)[timed], c.rule_names)
                    row[f"chosen on {k}"] = {
                        "id": c.id, "exits": len(c.exits),
                        "certified": bool(c.predicted.get("certificate")),
                        "relative_macs": holdout.evaluate_one(c).relative_cost,
                        "holdout_accuracy": holdout.evaluate_one(c).accuracy,
                        "predicted_ms_per_sample": 1e3 * est.time_per_sample_s,
                        "measured_ms_per_sample": 1e3 * measured[f"chosen on {k}"],
                        "measured_speedup": measured["base"] / measured[f"chosen on {k}"],
                        "predicted_ms_by_kind": _by_kind(tm, est.items)}
                t, m = row["chosen on time"], row["chosen on macs"]
                row["time_over_macs_measured"] = t["measured_ms_per_sample"] / m["measured_ms_per_sample"]
                rows.append(row)
                print(f"batch {batch:<3} drop {drop:g}: chosen on time {t['measured_ms_per_sample']:.4f} ms/sample "
                      f"(x{t['measured_speedup']:.2f}, {t['exits']} exits, MACs {t['relative_macs']:.3f}), chosen on "
                      f"MACs {m['measured_ms_per_sample']:.4f} (x{m['measured_speedup']:.2f}, {m['exits']} exits, "
                      f"MACs {m['relative_macs']:.3f}): time/MACs {row['time_over_macs_measured']:.3f}  "
                      f"load {row['loadavg'][0]:.2f}", flush=True)
    load["after"] = os.getloadavg()
    path = save_results("time_value_rebatch" if args.rebatch else "time_value",
                        {"table": TABLE, "profile_seconds": profile_s, "rounds": args.rounds,
                         "threads": 1, "loadavg": load, "rows": rows})
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
