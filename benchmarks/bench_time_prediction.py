"""Predicted against measured speed-up: how well a cost table predicts what a configuration delivers (issue 17).

Two targets:

- ``demo``: the bundled Fashion-MNIST cache and its checkpoint; the configuration ``exits.pipeline`` ships (the
  cheapest certified within 0.5 points, dp on search, Pareto Testing on calibration) and four more dp front
  configurations nearest to 0.3, 0.5, 0.7 and 0.9 relative MACs; timed on the Fashion-MNIST test images.
- ``resnet18-224``: timm ``resnet18`` at 224 px, random init, ``linear`` exits after every stage; its cache is a
  small dump of random images (``--resnet-samples`` search and as many holdout rows), and thresholds are set on
  search so that about a third of the inputs leave at each of the first three stages' exits.

For each runtime (eager ``ExitRuntime``, holding the table of configurations; the ONNX bundle through
``bundle.BundleRouter``, one bundle per configuration as a user ships the one they chose, or with
``--table-bundle`` one bundle of all of them), thread count and batch size B: each runtime or bundle is profiled
once at the largest B (``exits.profile``'s probes and ``profile_table``, at its default rounds), each
configuration's speed-up is predicted by ``search.time_cost.TimeCostModel`` at B on the exits the cache gives the
timed rows, and measured as ``exits.validate`` does (``time_against_base``: base and configuration alternating
in ``--rounds`` rounds over the same full batches of B, medians). Today's MAC prediction (1 / relative MACs) is
listed alongside. Prints the table and saves ``benchmarks/results/time_prediction[_quick].json`` with the
machine and the load average before and after each target::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_time_prediction.py [--quick]

``--quick`` (a loaded machine): the demo at batch 1 and 64 on 1 thread, eager and bundle; the ResNet at batch 1
and 16, eager, 1 thread. The full grid (batch 1, 64, 256; threads 1 and 2; eager and bundle; both targets) is
for a quiet machine. ``--rebatch``: re-batched serving instead (``exits.validate --rebatch``: the configuration's
batches run as one stream through ``run_batches(..., rebatch=True)``, predicted by the re-batched time model), at
the grid's batch sizes above 1; saved as ``time_prediction_rebatch[_quick].json`` (``_table_bundle`` inserted
with that option). ``--targets``, ``--runtimes``, ``--batches`` and ``--threads`` cut the grid (comma-separated;
the file name says so); ``--repeats N`` runs it N times in a row (each repeat profiles and times anew; rows carry
``repeat``).
Each row also gives the delivery, the measured speed-up times the relative MACs (1.0: the MAC estimate delivered),
and, where the bundle's batch-1 graph serves it (``paths``), the prediction from each path's
consecutive calls alone (without the paths' times after one another) beside the default.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: shared machines

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._machine import save_results  # noqa: E402
from exits.profile import DEFAULT_ROUNDS  # noqa: E402

TARGET_MACS = (0.3, 0.5, 0.7, 0.9)
TARGETS = ("demo", "resnet18-224")
FASHION = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Grid:
    batches: tuple[int, ...]
    threads: tuple[int, ...]
    runtimes: tuple[str, ...]
    resnet_batches: tuple[int, ...]
    resnet_runtimes: tuple[str, ...]
    rounds: int = 5
    timing_samples: int = 2048
    latency_samples: int = 200
    resnet_samples: int = 256
    resnet_timing_samples: int = 128   # a ResNet-18 at 224 px runs about 30 ms per image on one thread here
    resnet_latency_samples: int = 64
    resnet_rounds: int = 3
    min_time: float = 2e-3
    profile_rounds: int = DEFAULT_ROUNDS   # exits.profile's default
    resnet_profile_rounds: int = DEFAULT_ROUNDS   # as a user profiles it (the ResNet's 12 cells: 84 min, AMD VM)


FULL = Grid(batches=(1, 64, 256), threads=(1, 2), runtimes=("eager", "onnx"), resnet_batches=(1, 64, 256),
            resnet_runtimes=("eager", "onnx"))
QUICK = Grid(batches=(1, 64), threads=(1,), runtimes=("eager", "onnx"), resnet_batches=(1, 16),
             resnet_runtimes=("eager",), rounds=3, timing_samples=512, latency_samples=64, resnet_samples=64,
             resnet_timing_samples=64, resnet_latency_samples=32)


def _loadavg() -> list[str]:
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return []


# -- targets -------------------------------------------------------------------------------------
def demo_target(fashion: Path) -> tuple[Any, Any, torch.Tensor, list[tuple[str, Any]]]:
    """The bundled demo: model, cache, holdout images and (label, ExitConfig) of the configurations."""
    from benchmarks.device_check import DEMO_CACHE, DEMO_CHECKPOINT, holdout_images
    from data_cache import open_cache
    from exits.checkpoints import model_from_checkpoint, read_checkpoint
    from search import ExitProblem, run_search
    from search.pareto_testing import certified_within_drop

    cache = open_cache(DEMO_CACHE)
    ckpt = read_checkpoint(DEMO_CHECKPOINT)
    model = model_from_checkpoint(ckpt)
    x, _ = holdout_images(fashion, ckpt["data_config"], np.asarray(cache.sample_index("holdout")))
    problem = ExitProblem(cache, "search")
    front = run_search(problem, "dp").pareto()
    configs = [("certified", certified_within_drop(problem, 0.5, front=front).config)]
    for target in TARGET_MACS:
        i = int(np.argmin(np.abs(front.relative_cost - target)))
        configs.append((f"macs~{target:g}", front.configs[i]))
    return model, cache, x, configs


def resnet_target(n: int, tmp: Path) -> tuple[Any, Any, torch.Tensor, list[tuple[str, Any]]]:
    """ResNet-18 at 224 px, random init, exits after every stage; a dump of ``n`` + ``n`` random images."""
    from benchmarks._random_resnet import random_resnet18
    from benchmarks.device_check import profile_thresholds
    from exits.dump import dump_cache
    from search.config import ExitConfig

    model, splits, holdout_images = random_resnet18(n)
    cache = dump_cache(model, splits, tmp / "resnet18", k=2, batch_size=32)
    early = list(range(3))   # after the first three stages; the fourth stage's exit stays disabled
    scores = np.asarray(cache.topk_probs("search"))[early, 0, :]
    config = ExitConfig(tuple(early), tuple(profile_thresholds(scores, (1 / 3, 1 / 3, 1 / 3))), "max_prob")
    return model, cache, holdout_images, [("thirds", config)]


# -- one target on one runtime -------------------------------------------------------------------
def _runner(runtime: str, model: Any, doc: dict, cache: Any, threads: int, batch: int, folder: Path) -> tuple:
    """(probes, base fn, {id: (config, fn, re-batched stream fn)}, input conversion) of the eager runtime or the
    bundle router."""
    from exits._profile_targets import eager_probes, onnx_probes

    if runtime == "eager":
        from exits.runtime import ExitRuntime

        rt = ExitRuntime(model, doc, cache=cache, check_inputs=False)
        runs = {c.id: (c, lambda x, c=c: rt.run(x, c), lambda bs, c=c: rt.run_batches(bs, c, rebatch=True))
                for c in rt.configs}
        return eager_probes(rt, batch, "max_prob"), rt.base_forward, runs, lambda x: x
    from bundle import open_bundle
    from exits.export_bundle import export_bundle

    if not (folder / "manifest.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        export_bundle(model, doc, folder, cache=cache, exporter="torchscript", announce=False)
    router = open_bundle(folder, threads=threads)
    runs = {c.id: (c, lambda x, c=c: router.run(x, c), lambda bs, c=c: router.run_batches(bs, c, rebatch=True))
            for c in router.configs}
    return (onnx_probes(router, batch, "max_prob"), lambda x: router.run(x, router.base_config), runs,
            lambda x: x.numpy())


def _deployments(runtime: str, labelled: list[tuple[str, Any]], table_bundle: bool) -> list[tuple[str, list]]:
    """What is deployed and profiled together: the eager runtime holds the whole table; a bundle is exported for
    each configuration, as a user ships the one they chose (``table_bundle``: one bundle of the whole table)."""
    if runtime == "eager" or table_bundle:
        return [("table", labelled)]
    return [(label, [(label, c)]) for label, c in labelled]


def run_target(name: str, model: Any, cache: Any, x: torch.Tensor, labelled: list[tuple[str, Any]],
               runtimes: tuple[str, ...], batches: tuple[int, ...], grid: Grid, tmp: Path,
               samples: tuple[int, int], rounds: tuple[int, int], rebatch: bool = False,
               table_bundle: bool = False) -> list[dict]:
    """Profile, predict and measure every configuration of one target; one row per (runtime, threads, B, config);
    ``rebatch``: served re-batched (batch sizes above 1 only); ``table_bundle``: one bundle for all the
    configurations (their shared exits fused, switched per call) instead of one per configuration; ``rounds``:
    (the profile's, the timing's)."""
    from exits.measure import time_against_base, timing_batches
    from exits.profile import profile_table
    from search import ExitProblem
    from search.export import build_export
    from search.time_cost import TimeCostModel

    holdout = ExitProblem(cache, "holdout")
    rows, cpu = [], torch.device("cpu")
    for runtime in runtimes:
        for threads in grid.threads:
            torch.set_num_threads(threads)
            for deployed, group in _deployments(runtime, labelled, table_bundle):
                doc = build_export([("dp", c) for _, c in group], search=ExitProblem(cache, "search"),
                                   holdout=holdout, pareto=False)
                by_rule = {(tuple(c.exits), tuple(c.thresholds)): label for label, c in group}  # the export sorts
                probes, base_fn, runs, convert = _runner(runtime, model, doc, cache, threads, max(batches),
                                                         tmp / name / deployed)
                load = _loadavg()
                with torch.inference_mode():
                    table = profile_table(f"{runtime}-t{threads}", probes, cache=cache, model_fingerprint=None,
                                          device=cpu, threads=threads, batch_size=max(batches), runtime=runtime,
                                          score="max_prob", rounds=rounds[0], min_time=grid.min_time)
                # the same table without the paths' times after one another: what each path's consecutive calls
                # predict (a bundle's batch-1 graph), beside the default
                alone = dataclasses.replace(table, items=tuple(dataclasses.replace(it, after=None)
                                                               for it in table.items))
                for batch in [b for b in batches if b > 1 or not rebatch]:
                    tm, tm_alone = (TimeCostModel(t, [e.units for e in cache.exits], [e.name for e in cache.exits],
                                                  batch_size=batch, rebatch=rebatch) for t in (table, alone))
                    n = samples[0] if batch == 1 else samples[1]
                    timed = np.arange(max(1, n // batch) * batch) % len(x)   # the rows timing_batches takes
                    inputs = [convert(b) for b in timing_batches(x, batch, n)]
                    for config, fn, stream in runs.values():
                        leave = holdout.assign(config)
                        est = tm.estimate(config.exits, leave[timed], config.rule_names)
                        paths = any(it.startswith("path:") for it in est.items)
                        est_alone = tm_alone.estimate(config.exits, leave[timed], config.rule_names)
                        rel_macs = holdout.evaluate_one(config).relative_cost
                        with torch.inference_mode():
                            t = time_against_base(base_fn, fn, inputs, [], rounds[1], cpu,
                                                  stream=stream if rebatch else None, rebatch=rebatch)["b64"]
                        row = {"target": name, "runtime": runtime, "threads": threads, "batch": batch,
                               "rebatch": rebatch, "bundle": None if runtime == "eager" else deployed,
                               "config": by_rule[(tuple(config.exits), tuple(config.thresholds))],
                               "relative_macs": rel_macs, "mac_speedup": 1 / rel_macs,
                               "predicted_speedup": est.speedup, "measured_speedup": t["speedup"],
                               "speedup_error": est.speedup / t["speedup"] - 1,
                               "mac_speedup_error": 1 / rel_macs / t["speedup"] - 1,
                               "paths": paths,
                               "predicted_speedup_paths_alone": est_alone.speedup if paths else None,
                               "speedup_error_paths_alone": est_alone.speedup / t["speedup"] - 1 if paths else None,
                               "delivery": t["speedup"] * rel_macs,
                               "predicted_ms_per_sample": 1e3 * est.time_per_sample_s,
                               "predicted_base_ms_per_sample": 1e3 * est.base_time_per_sample_s,
                               "predicted_ms_by_kind": _by_kind(table, est.items),
                               "measured_ms_per_sample": 1e3 * t["config_s"] / t["n_samples"],
                               "measured_base_ms_per_sample": 1e3 * t["base_s"] / t["n_samples"],
                               "speedup_per_round": t["speedup_per_round"], "loadavg_before": load,
                               "loadavg_after": _loadavg()}
                        rows.append(row)
                        _print_row(row)
    return rows


def _by_kind(table: Any, items: dict[str, float]) -> dict[str, float]:
    """Predicted ms per sample per kind of item (segment or graph, head, step, finish, collect): where the time goes,
    and what the configuration would take with free heads and steps."""
    kind = {it.name: it.kind for it in table.items}
    out: dict[str, float] = {}
    for name, s in items.items():
        out[kind[name]] = out.get(kind[name], 0.0) + 1e3 * s
    return out


def _print_row(r: dict) -> None:
    print(f"{r['target']:<13} {r['runtime']:<5} t{r['threads']} b{r['batch']:<4}{'r' if r['rebatch'] else ' '} "
          f"{r['config']:<10} delivery {r['delivery']:.2f} "
          f"MACs {r['relative_macs']:.3f}  measured x{r['measured_speedup']:.2f}  time model x"
          f"{r['predicted_speedup']:.2f} ({r['speedup_error']:+.1%})  MACs x{r['mac_speedup']:.2f} "
          f"({r['mac_speedup_error']:+.1%})  ms/sample config {r['predicted_ms_per_sample']:.3f} pred "
          f"{r['measured_ms_per_sample']:.3f} meas, base {r['predicted_base_ms_per_sample']:.3f} pred "
          f"{r['measured_base_ms_per_sample']:.3f} meas  load {' '.join(r['loadavg_after'])}"
          + (f"  paths alone x{r['predicted_speedup_paths_alone']:.2f} ({r['speedup_error_paths_alone']:+.1%})"
             if r["paths"] else ""), flush=True)


def summary(rows: list[dict]) -> dict[str, Any]:
    """Largest absolute relative errors of both predictions, per target and runtime."""
    out: dict[str, Any] = {}
    for key in sorted({(r["target"], r["runtime"]) for r in rows}):
        sel = [r for r in rows if (r["target"], r["runtime"]) == key]
        out[f"{key[0]} {key[1]}"] = {"n": len(sel),
                                     "max_abs_time_error": max(abs(r["speedup_error"]) for r in sel),
                                     "max_abs_mac_error": max(abs(r["mac_speedup_error"]) for r in sel),
                                     "within_10pct": sum(abs(r["speedup_error"]) <= 0.10 for r in sel)}
        paths = [r for r in sel if r["paths"]]
        if paths:  # the batch-1 graph's rows, also predicted from each path's consecutive calls alone
            out[f"{key[0]} {key[1]}"]["batch_1_graph"] = {
                "n": len(paths), "within_10pct": sum(abs(r["speedup_error"]) <= 0.10 for r in paths),
                "within_10pct_paths_alone": sum(abs(r["speedup_error_paths_alone"]) <= 0.10 for r in paths),
                "max_abs_time_error": max(abs(r["speedup_error"]) for r in paths),
                "max_abs_time_error_paths_alone": max(abs(r["speedup_error_paths_alone"]) for r in paths)}
    return out


def _subset(grid: Grid, args: argparse.Namespace) -> tuple[Grid, str]:
    """The grid cut to ``--runtimes``, ``--batches`` and ``--threads``, and the results file's suffix naming the cut
    (``""`` for the whole grid)."""
    cut, suffix = {}, ""
    for option, fields in (("runtimes", ("runtimes", "resnet_runtimes")), ("batches", ("batches", "resnet_batches")),
                           ("threads", ("threads",))):
        text = getattr(args, option)
        if text is None:
            continue
        asked = [v if option == "runtimes" else int(v) for v in text.split(",") if v]
        for f in fields:
            cut[f] = tuple(v for v in getattr(grid, f) if v in asked)
        if not cut[fields[0]]:
            raise SystemExit(f"--{option} {text}: none of the grid's {list(getattr(grid, fields[0]))}")
        suffix += f"_{option}-" + "-".join(map(str, cut[fields[0]]))
    return dataclasses.replace(grid, **cut), suffix


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the reduced grid for a loaded machine")
    p.add_argument("--fashion-mnist", default=str(FASHION), help="folder of the Fashion-MNIST test files")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: " + ", ".join(TARGETS))
    p.add_argument("--rebatch", action="store_true", help="re-batched serving (batch sizes above 1)")
    p.add_argument("--table-bundle", action="store_true",
                   help="one bundle of all the configurations instead of one per configuration")
    p.add_argument("--runtimes", default=None, help="comma-separated subset of the grid's: eager, onnx")
    p.add_argument("--batches", default=None, help="comma-separated subset of the grid's batch sizes")
    p.add_argument("--threads", default=None, help="comma-separated subset of the grid's thread counts")
    p.add_argument("--repeats", type=int, default=1, help="run the (cut) grid this many times, one after another")
    args = p.parse_args(argv)
    grid, subset = _subset(QUICK if args.quick else FULL, args)
    targets = [t for t in args.targets.split(",") if t]
    if set(targets) != set(TARGETS):
        subset = "_targets-" + "-".join(targets) + subset
    rows: list[dict] = []
    started, load = time.time(), _loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):   # each repeat profiles and times anew (bundles exported once)
            got: list[dict] = []
            if "demo" in targets:
                model, cache, x, configs = demo_target(Path(args.fashion_mnist))
                got += run_target("demo", model, cache, x, configs, grid.runtimes, grid.batches, grid, Path(tmp),
                                  (grid.latency_samples, grid.timing_samples), (grid.profile_rounds, grid.rounds),
                                  args.rebatch, args.table_bundle)
            if "resnet18-224" in targets:
                model, cache, x, configs = resnet_target(grid.resnet_samples, Path(tmp) / f"r{repeat}")
                got += run_target("resnet18-224", model, cache, x, configs, grid.resnet_runtimes,
                                  grid.resnet_batches, grid, Path(tmp) / f"r{repeat}", (grid.resnet_latency_samples,
                                                                         grid.resnet_timing_samples),
                                  (grid.resnet_profile_rounds, grid.resnet_rounds), args.rebatch, args.table_bundle)
            rows += [dict(r, repeat=repeat) for r in got]
    from exits.memory import memory_policy

    figures = {"quick": args.quick, "repeats": args.repeats, "rebatch": args.rebatch,
               "table_bundle": args.table_bundle, "grid": asdict(grid),
               "torch": torch.__version__, "memory": memory_policy(),
               "loadavg_start": load,
               "loadavg_end": _loadavg(), "elapsed_s": time.time() - started, "summary": summary(rows), "rows": rows}
    name = ("time_prediction" + ("_rebatch" if args.rebatch else "") + ("_table_bundle" if args.table_bundle else "")
            + ("_quick" if args.quick else "") + subset + (f"_x{args.repeats}" if args.repeats > 1 else ""))
    path = save_results(name, figures)
    for k, v in figures["summary"].items():
        print(f"{k}: time model max |error| {v['max_abs_time_error']:.1%} ({v['within_10pct']}/{v['n']} within 10%), "
              f"MACs max |error| {v['max_abs_mac_error']:.1%}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
