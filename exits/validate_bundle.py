"""``python -m exits.validate_bundle``: run an exported bundle on a split of the dataset and compare with the cache.

The bundle runs through ``bundle.BundleRouter`` (onnxruntime and numpy; this module uses torch only to load the
dataset). For every configuration of the bundle, on one split of the cache (the dataset's samples joined on
``sample_index``):

- per-sample agreement with the cache: the same exit and prediction as ``search.ExitProblem.assign`` gives;
  disagreements where a cached score lies within ``--tolerance`` of a threshold the sample was compared with are
  counted apart (onnxruntime's float rounding differs from PyTorch's in the last bits);
- measured accuracy and MACs (the router's per-sample accounting from the manifest's per-graph MACs) against the
  cache's prediction;
- throughput at batch 64 and latency at batch 1 (mean and median), in rounds that alternate the bundle's base graph
  (the whole model as one ONNX graph, run through the same router) and the configuration, in the same process; with
  ``--rebatch`` the configuration serves re-batched (its throughput batches as one stream, every graph on full
  batches).

Writes a JSON report (``bundlevalidation/1``) and prints a table. Bad input (a bundle with a missing or altered
manifest or graph, a cache other than the bundle's, an unknown configuration id) prints one line, exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from data_cache.cli_types import warn
from data_cache.outputs import check_outputs, cli_entry, write_text_atomic

from ._validation_cli import (
    SEARCH_SPLIT_WARNING,
    check_labels,
    config_entry,
    progress_printer,
    speed_fields,
    time_fields,
)
from .errors import ExitsError
from .measure import (
    SPEED_COLUMNS,
    CacheComparison,
    add_timing_options,
    describe_machine,
    exit_fractions,
    format_rows,
    time_against_base,
    timing_batches,
    workers_line,
    workers_threads,
)
from .time_prediction import check_timeable, serves_rebatched, time_summary
from .validation_inputs import CALIBRATION_WARNING, open_searched_cache, split_rows, verify_table

__all__ = ["REPORT_FORMAT", "validate_bundle", "format_table", "main"]

REPORT_FORMAT = "bundlevalidation/1"
_CPU = torch.device("cpu")


def _timings(router: Any, config: Any, timing_batches: Sequence[np.ndarray], latency_samples: Sequence[np.ndarray],
             rounds: int, rebatch: bool, workers: int = 1) -> dict[str, Any]:
    """Alternate rounds of the base graph and ``config``: batch-64 throughput (re-batched or on ``workers`` threads:
    one stream, the base graph's too on workers), batch-1 median latency."""
    stream = (lambda bs: router.run_batches(bs, config, rebatch=rebatch, workers=workers)) \
        if rebatch or workers > 1 else None
    base_stream = (lambda bs: router.run_batches(bs, router.base_config, workers=workers)) if workers > 1 else None
    return time_against_base(lambda x: router.run(x, router.base_config), lambda x: router.run(x, config),
                             timing_batches, latency_samples, rounds, _CPU, stream=stream, base_stream=base_stream,
                             rebatch=rebatch, workers=workers)


def _config_entry(router: Any, c: Any, images: list[np.ndarray], comparison: CacheComparison,
                  timing: tuple[Sequence[np.ndarray], Sequence[np.ndarray], int], time_model: Any,
                  rebatch: bool, workers: int = 1) -> dict[str, Any]:
    """Run ``c`` over ``images``, compare it with the cache, time it against the base graph (``timing``:
    throughput batches, latency samples, rounds; ``rebatch``: served re-batched; ``workers``: served on that many
    threads, the base graph too); its report entry."""
    result = router.run_batches(images, c, rebatch=rebatch)
    predicted, agreement = comparison.compare(c, result.exits, result.predictions)
    measured = {"accuracy": float(np.mean(result.predictions == comparison.labels)),
                "relative_cost": result.relative_cost,
                "macs_per_sample": float(result.macs.mean()),
                "exit_fractions": exit_fractions(result.exits, list(c.exits), router.final_exit)}
    entry = config_entry(c, comparison.exit_names, predicted, measured, agreement, result.relative_cost)
    entry["session_calls"] = router.session_calls(c)
    if router.runs_as_one_graph(c):  # one-image calls take the batch-1 graph: every image through it too
        ones = [router.run(x[i : i + 1], c) for x in images for i in range(len(x))]
        same = sum(int(o.exits[0] == e and o.predictions[0] == p)
                   for o, e, p in zip(ones, result.exits, result.predictions, strict=True))
        entry["batch1_graph"] = {"images": len(ones), "same_exit_and_prediction_as_batches": same}
    t = _timings(router, c, *timing, rebatch, workers)
    entry.update(speed_fields(t, entry["mac_estimate_speedup"]))
    entry.update(time_fields(time_model, c, comparison, t, predicted))
    return entry


def _bundle_fields(router: Any) -> dict[str, Any]:
    """The report's description of the bundle and of the machine that ran it."""
    import onnxruntime

    manifest = router.manifest.doc
    return {"bundle": {"path": str(router.path), "fingerprint": manifest["fingerprint"],
                       "exporter": manifest["onnx"]["exporter"], "opset": manifest["onnx"]["opset"],
                       "n_graphs": len(manifest["graphs"])},
            "model": dict(manifest["model"]),
            "machine": {**describe_machine(_CPU), "onnxruntime": onnxruntime.__version__,
                        "ort_threads": router.threads}}


def validate_bundle(router: Any, configs: Sequence[Any], batches: Sequence[tuple[np.ndarray, np.ndarray]], *,
                    split: str, cache: Any, timing_batches: Sequence[np.ndarray] = (),
                    latency_samples: Sequence[np.ndarray] = (), rounds: int = 3, tolerance: float = 1e-5,
                    progress: Callable[[str], None] | None = None, time_model: Any = None,
                    rebatch: bool = False, workers: int = 1) -> dict[str, Any]:
    """Run ``configs`` (``contract.ExitConfig``) of ``router`` over ``batches`` (``(images, labels)`` in the cache's
    row order of ``split``), time them against the base graph; return the report dictionary. With ``time_model``
    (``timing_batches`` then at its batch size) also the predicted against the measured speed-up; ``rebatch``:
    the configurations run and are timed re-batched; ``workers``: their throughput (and the base graph's) is timed
    on that many threads (``run_batches(..., workers=)``)."""
    say = progress or (lambda msg: None)
    comparison = CacheComparison(cache, split, tolerance, router.objective)
    labels = comparison.labels
    check_labels(np.concatenate([y for _, y in batches]) if batches else np.empty(0, np.int64), labels)
    images = [x for x, _ in batches]
    say("base graph")
    base = router.run_batches(images, router.base_config)
    cached_final = np.asarray(comparison.topk_ids[-1, 0])
    reports = []
    for c in configs:
        say(f"config {c.id}")
        reports.append(_config_entry(router, c, images, comparison, (timing_batches, latency_samples, rounds),
                                     time_model, rebatch, workers))
    described = _bundle_fields(router)
    return {"format": REPORT_FORMAT, "split": split, "n_samples": comparison.n, "tolerance": tolerance,
            "rebatch": rebatch, "workers": workers, "objective": router.objective, "bundle": described["bundle"],
            "cache": {"fingerprint": cache.fingerprint}, "model": described["model"],
            "machine": described["machine"], "rounds": rounds,
            "base": {"predicted": {"accuracy": float(np.mean(cached_final == labels)), "relative_cost": 1.0},
                     "measured": {"accuracy": float(np.mean(base.predictions == labels)),
                                  "agreement_with_cache": float(np.mean(base.predictions == cached_final)),
                                  "macs_per_sample": router.base_macs}},
            "configs": reports, **({"time_prediction": time_summary(reports)} if time_model is not None else {})}


def format_table(report: dict[str, Any]) -> str:
    """One line per configuration: predicted vs measured accuracy and cost, agreement, speedups."""
    return "\n".join(format_rows(report, "base graph", "agree: same exit and prediction as the cache; near: "
                                  f"disagreements within the tolerance of a threshold; {SPEED_COLUMNS}; speedups over "
                                  "the bundle's base graph, both on onnxruntime", overhead=_overhead))


def _overhead(entry: dict[str, Any]) -> str:
    k, calls = len(entry["exits"]), entry.get("session_calls")
    return (f"its {k} enabled exits make up to {calls} onnxruntime session calls per batch where the base graph "
            "makes 1" if calls else f"each of its {k} enabled exits adds onnxruntime session calls")


# -- command line --------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from data_cache.cli_types import CommandParser, threads
    from data_cache.cost_tables import table_name_option

    p = CommandParser(prog="python -m exits.validate_bundle",
                      description="Run an exported bundle (onnxruntime) on a split of the dataset: agreement "
                                  "with the cache, accuracy, MACs, speed against the base graph.")
    p.add_argument("--bundle", required=True, help="bundle folder (python -m exits.export_bundle)")
    p.add_argument("--report", required=True, help="JSON report to write")
    p.add_argument("--split", default="holdout", help="split of the cache to run (default holdout)")
    p.add_argument("--cache", default=None, help="the cache the bundle's configurations were searched on "
                                                 "(default: the bundled cache, if it is that one)")
    p.add_argument("--dataset", default=None, help="dataset name (default: the cache's)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: the dataset's offline location)")
    p.add_argument("--id", default=None, help="only the configuration with this id (default: all)")
    p.add_argument("--threads", type=threads, default=None,
                   help="onnxruntime intra-op threads per graph (default: the cost table's, else 1)")
    p.add_argument("--cost-table", type=table_name_option, default=None, metavar="NAME",
                   help="predict each configuration's time from this onnx cost table of the cache (python -m "
                        "exits.profile --runtime onnx) and time it at the table's batch size (default: the one a "
                        "time export was searched on, at its batch size)")
    add_timing_options(p, tolerance=1e-5)
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def load_split(router: Any, cache: Any, split: str, *, dataset: str | None = None, data_root: str | None = None,
               batch_size: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    """The split's images and labels as numpy batches in the cache's row order, transformed as the manifest says."""
    from torch.utils.data import DataLoader

    manifest = router.manifest.doc
    model_input = manifest["input"]
    data_config = {"input_size": model_input["shape"],
                   **{k: v for k, v in model_input.items() if k not in ("shape", "dtype")}}
    rows = split_rows(split, cache, {"data_config": data_config, "data": manifest.get("data") or {}},
                      dataset=dataset, data_root=data_root)
    return [(x.numpy(), y.numpy()) for x, y, _ in DataLoader(rows, batch_size=batch_size, shuffle=False)]


def _open_router(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """The bundle's router (``--threads``, else the time target's, else 1), the cache it was searched on, the time
    target (``exits.time_prediction``) and the verification of its table against the cache; warnings given."""
    from bundle import BundleError, open_bundle
    from bundle.manifest import read_manifest

    from .time_prediction import Machine, machine_lines, resolve_time_target

    manifest = read_manifest(args.bundle)
    want = manifest.doc["cache"]["fingerprint"]
    cache = open_searched_cache(args.cache, want)
    if cache.fingerprint != want:
        raise BundleError(f"the bundle's configurations were searched on cache {want[:19]}..., not on "
                          f"{args.cache} ({cache.fingerprint[:19]}...)")
    target, lines = resolve_time_target(manifest.exitconfig, cache, args.cost_table, runtime="onnx",
                                        source=f"{args.bundle}: exitconfig",
                                        bundle_fingerprint=manifest.doc["fingerprint"], rebatch=args.rebatch)
    threads = workers_threads(args.workers, args.threads, target.threads if target is not None else None,
                              ExitsError) or 1
    # one-image calls as the table's profile ran them: through the batch-1 graph if it timed its paths
    one_graph = None if target is None else bool(target.table.of_kind("path"))
    router = open_bundle(args.bundle, threads=threads, one_graph=one_graph)
    if target is not None:
        lines += tuple(machine_lines(target, Machine("cpu", describe_machine(_CPU)["cpu"], threads)))
        if args.workers > 1:
            lines += (workers_line(args.workers, target.threads),)
    for line in lines:
        warn(line)
    verification = verify_table(router.manifest.doc["exitconfig"], cache, source=f"{args.bundle}: exitconfig",
                                warn=False)
    for line in verification.warnings + ((CALIBRATION_WARNING,) if args.split == "calibration" else ()):
        warn(line)
    return router, cache, target, verification


def _timing_inputs(args: argparse.Namespace, batches: list[tuple[np.ndarray, np.ndarray]],
                   target: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Throughput batches (at the time target's batch size, else ``--batch-size``) and batch-1 latency samples."""
    if args.no_timing:
        return [], []
    xs = np.concatenate([x for x, _ in batches])
    timing = timing_batches(xs, target.batch_size, args.timing_samples) if target else \
        [xs[i:i + args.batch_size] for i in range(0, min(len(xs), args.timing_samples), args.batch_size)]
    xs = xs[: args.timing_samples]
    latency = [] if args.no_latency else [xs[i:i + 1] for i in range(min(args.latency_samples, len(xs)))]
    return timing, latency


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    from bundle import BundleError
    from data_cache import CacheError
    from data_cache.bundled import bundled_cache_path
    from data_cache.outputs import OutputError
    from data_cache.ownership import json_kind

    kind = json_kind(REPORT_FORMAT)
    say = progress_printer(args.quiet)
    try:
        read = [("--bundle", args.bundle), ("--cache", args.cache or bundled_cache_path()),
                ("--data-root", args.data_root)]
        report_path = check_outputs([("--report", args.report)], overwrite=args.overwrite, kinds={"--report": kind},
                                    suffixes={"--report": (".json",)}, inputs=read)["--report"]
        if args.split == "search":
            warn(SEARCH_SPLIT_WARNING)
        router, cache, target, verification = _open_router(args)
        configs = [router.set_config(args.id)] if args.id is not None else router.configs
        check_timeable(target, configs)
        say(f"loading {args.split}")
        batches = load_split(router, cache, args.split, dataset=args.dataset, data_root=args.data_root,
                             batch_size=args.batch_size)
        timing, latency = _timing_inputs(args, batches, target)
        report = validate_bundle(router, configs, batches, split=args.split, cache=cache, timing_batches=timing,
                                 latency_samples=latency, rounds=args.rounds, tolerance=args.tolerance, progress=say,
                                 time_model=target.model if target else None,
                                 rebatch=serves_rebatched(router.manifest.exitconfig, args.rebatch),
                                 workers=args.workers)
        report["batch_size"] = args.batch_size
        if target is not None:
            report["cost_table"] = target.record()
        report["verified"] = verification.describe()
        write_text_atomic(report_path, json.dumps(report, indent=1) + "\n", option="--report", overwrite=args.overwrite,
                          kind=kind)
    except (BundleError, CacheError, ExitsError, OutputError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    for c in report["configs"]:
        one = c.get("batch1_graph")
        if one is not None:
            print(f"{c['id']}: one image at a time (the batch-1 graph): the same exit and prediction as in batches "
                  f"for {one['same_exit_and_prediction_as_batches']} of {one['images']} images")
    print(report["verified"])
    print(f"report written to {args.report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 with one line on bad input."""
    return cli_entry(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
