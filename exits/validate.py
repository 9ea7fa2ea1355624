"""``python -m exits.validate``: run exported configurations on the real model and compare with the cache.

For every chosen configuration of an ``exitconfig/1`` export, on one split of the dataset (the cache's
samples, joined on ``sample_index``):

- measured accuracy and MACs: the runtime's per-sample accounting from the unit table and, independently,
  ``FlopCounterMode`` over the whole run (MACs = FLOPs / 2);
- per-sample agreement with the cache: same exit and same prediction as ``search.ExitProblem.assign``
  gives; disagreements where a cached score lies within ``--tolerance`` of a threshold it was compared
  with are counted apart (float rounding: batch composition changes the last bits of a convolution);
- throughput at batch 64 and latency at batch 1 by mean and median (after warm-up), measured in rounds that alternate
  the plain base model (the backbone's forward alone) and the configuration in the same process; with ``--rebatch``
  the configuration serves re-batched (its throughput batches as one stream, every segment on full batches);
- for a configuration exported with a certificate: the measured accuracy drop against the base model next
  to the certified one (or the measured relative cost next to the certified budget).

Before anything runs, the export's numbers and certificates are recomputed from the cache
(``search.verify``): one that does not reproduce is refused in one line naming the configuration and field.

Writes a JSON report (``exitvalidation/1``) and a figure (predicted vs measured front; measured speedup
against MAC saving). Bad input (configuration for another model or cache, missing checkpoint, exits the
model lacks, thresholds out of range) prints one line and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from contract.costs import MEASURED_COST_MODEL

from ._validation_cli import (
    SEARCH_SPLIT_WARNING,
    check_labels,
    config_entry,
    progress_printer,
    speed_fields,
    time_fields,
)
from ._validation_plot import MIN_ACCURACY_SPAN, plot_report
from .errors import ExitsError
from .measure import (
    SPEED_COLUMNS,
    CacheComparison,
    add_timing_options,
    describe_machine,
    exit_fractions,
    format_rows,
    parallel_stream,
    spread,
    time_against_base,
    timing_batches,
    workers_line,
    workers_threads,
)
from .time_prediction import check_timeable, serves_rebatched, time_summary
from .validation_inputs import CALIBRATION_WARNING, open_searched_cache, split_rows, warning_lines

if TYPE_CHECKING:
    from contract import ExitConfig

    from .runtime import ExitRuntime

__all__ = ["REPORT_FORMAT", "MIN_ACCURACY_SPAN", "validate", "plot_report", "main"]

REPORT_FORMAT = "exitvalidation/1"
MANY_CONFIGS = 16   # more configurations than this, all timed: a warning says what it costs


def _counted_macs(fn: Callable[[], Any]) -> tuple[float, Any]:
    """MACs (FLOPs / 2) of ``fn()`` by ``FlopCounterMode`` (attention included), and its result."""
    from torch.utils.flop_counter import FlopCounterMode

    from .macs import ATTENTION_FORMULAS

    with FlopCounterMode(display=False, custom_mapping=ATTENTION_FORMULAS) as counter, warnings.catch_warnings():
        # --compile: the counter's module hooks are global; torch warns they fire once more for a compiled module
        warnings.filterwarnings("ignore", message="Using `torch.compile\\(module\\)` when there are global hooks")
        out = fn()
    return counter.get_total_flops() / 2, out


def _base_accuracy(runtime: ExitRuntime, loader: Any, labels: np.ndarray) -> float:
    """Top-1 accuracy of the base model over ``loader``, whose labels must be the cache's."""
    seen_labels, base_correct = [], 0
    for x, y, _ in loader:
        base_correct += int((runtime.base_forward(x).argmax(1).cpu() == y).sum())
        seen_labels.append(y.numpy())
    check_labels(np.concatenate(seen_labels), labels)
    return base_correct / len(labels)


def _config_entry(runtime: ExitRuntime, c: ExitConfig, loader: Any, comparison: CacheComparison,
                  base_counted: float, base_acc: float, timing: tuple[list[torch.Tensor], list[torch.Tensor], int],
                  time_model: Any, rebatch: bool, workers: int = 1) -> dict[str, Any]:
    """Run ``c`` over ``loader`` with its MACs counted, compare it with the cache, time it against the base model
    (``timing``: throughput batches, latency samples, rounds; ``rebatch``: served re-batched; ``workers``: served
    data-parallel, the base model too); its report entry."""
    counted, result = _counted_macs(lambda: runtime.run_batches(loader, c, rebatch=rebatch))
    got_exit, got_pred = result.exits.numpy(), result.predictions.numpy()
    predicted, agreement = comparison.compare(c, got_exit, got_pred)
    stream = (lambda bs: runtime.run_batches(bs, c, rebatch=rebatch, workers=workers)) \
        if rebatch or workers > 1 else None
    t = time_against_base(runtime.base_forward, lambda x: runtime.run(x, c), *timing, runtime.device, stream=stream,
                          base_stream=parallel_stream(runtime.base_forward, workers) if workers > 1 else None,
                          rebatch=rebatch, workers=workers)
    n = comparison.n
    measured = {"accuracy": float(np.mean(got_pred == comparison.labels)),
                "relative_cost": counted / n / base_counted,
                "relative_cost_accounted": result.relative_cost,
                "macs_per_sample": counted / n,
                "exit_fractions": exit_fractions(got_exit, list(c.exits), len(runtime.model.exits) - 1)}
    entry = config_entry(c, [e.name for e in runtime.model.exits], predicted, measured, agreement,
                         result.relative_cost)
    cert = c.predicted.get("certificate")
    if cert is not None:
        entry["certificate"] = dict(cert)
        entry["measured_drop"] = base_acc - measured["accuracy"]
    entry.update(speed_fields(t, entry["mac_estimate_speedup"]))
    entry.update(time_fields(time_model, c, comparison, t, predicted))
    return entry


def validate(runtime: ExitRuntime, configs: list[ExitConfig], loader: Any, *, split: str, cache: Any,
             timing_batches: list[torch.Tensor], latency_samples: list[torch.Tensor], rounds: int = 3,
             tolerance: float = 1e-6, progress: Callable[[str], None] | None = None,
             time_model: Any = None, rebatch: bool = False, workers: int = 1) -> dict[str, Any]:
    """Run ``configs`` (``contract.ExitConfig``) of ``runtime`` over ``loader`` (batches ``(x, labels, sample_index)``
    in the cache's row order) and time them against the base model; return the report dictionary.

    With ``time_model`` (``search.time_cost.TimeCostModel``; ``timing_batches`` then at its batch size) each
    configuration also gets its predicted speed-up against the measured one (``exits.time_prediction``).
    ``rebatch``: the configurations run and are timed re-batched (``ExitRuntime.run_batches(..., rebatch=True)``);
    ``workers``: their throughput is timed on that many worker threads, the base model's too (``workers=``)."""
    say = progress or (lambda msg: None)
    comparison = CacheComparison(cache, split, tolerance, runtime.objective)
    labels = comparison.labels
    base_counted, _ = _counted_macs(lambda: runtime.base_forward(timing_batches[0][:1] if timing_batches
                                                                 else next(iter(loader))[0][:1]))
    say("base model")
    base_acc = _base_accuracy(runtime, loader, labels)
    reports = []
    for c in configs:
        say(f"config {c.id}")
        reports.append(_config_entry(runtime, c, loader, comparison, base_counted, base_acc,
                                     (timing_batches, latency_samples, rounds), time_model, rebatch, workers))
    return {"format": REPORT_FORMAT, "split": split, "n_samples": comparison.n, "tolerance": tolerance,
            "rebatch": rebatch, "workers": workers,
            "objective": runtime.objective, "cache": {"fingerprint": cache.fingerprint},
            "model": {"name": runtime.model.model_name, "fingerprint": runtime.model.fingerprint()},
            "machine": describe_machine(runtime.device), "memory": runtime.memory, "rounds": rounds,
            "base": {"predicted": {"accuracy": float(np.mean(np.asarray(comparison.topk_ids[-1, 0]) == labels)),
                                   "relative_cost": 1.0},
                     "measured": {"accuracy": base_acc, "macs_per_sample": base_counted,
                                  "macs_unit_table": runtime.base_macs}},
            "configs": reports, **({"time_prediction": time_summary(reports)} if time_model is not None else {})}


# -- table ---------------------------------------------------------------------------------------

def _overhead(entry: dict[str, Any]) -> str:
    k = len(entry["exits"])
    return (f"each of its {k} enabled exits adds a head, its score and threshold test, and one more segment call "
            "on a compacted batch")


def format_table(report: dict[str, Any]) -> str:
    """One line per configuration: predicted vs measured accuracy and cost, agreement, speedups; then the
    certified bounds next to what was measured."""
    lines = format_rows(report, "base", "agree: same exit and prediction as the cache; near: disagreements within the "
                        f"tolerance of a threshold; {SPEED_COLUMNS}; speedups over the base model",
                        overhead=_overhead)
    if "verified" in report:
        lines.append(report["verified"])
    for c in report["configs"]:
        cert = c.get("certificate")
        if cert is None:
            continue
        how = f"delta {cert.get('delta')}, {cert.get('n_cal')} calibration samples, {cert.get('bound')}"
        if "certified_drop" in cert:
            lines.append(f"{c['id']}: certified drop <= {100 * cert['certified_drop']:.3f} points ({how}); measured "
                         f"drop on {report['split']}: {100 * c['measured_drop']:.3f} points")
        elif "certified_relative_cost" in cert and report.get("objective", MEASURED_COST_MODEL) != MEASURED_COST_MODEL:
            lines.append(f"{c['id']}: certified relative {report['objective']} cost <= "
                         f"{cert['certified_relative_cost']:.4f} ({how}); not measured here (a run measures MACs)")
        elif "certified_relative_cost" in cert:
            lines.append(f"{c['id']}: certified relative cost <= {cert['certified_relative_cost']:.4f} ({how}); "
                         f"measured on {report['split']}: {c['measured']['relative_cost']:.4f}")
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from data_cache.cli_types import CommandParser, non_negative_int, positive_int, threads
    from data_cache.cost_tables import table_name_option

    from .devices import device_option

    p = CommandParser(prog="python -m exits.validate",
                      description="Run exported exit configurations on the real model: accuracy, MACs, "
                                  "agreement with the cache, speed against the base model.")
    p.add_argument("--config", required=True, help="exitconfig/1 file (python -m search.pareto --export)")
    p.add_argument("--checkpoint", required=True, help="head checkpoint (python -m exits.train / exits.pipeline)")
    p.add_argument("--model", default=None, help="timm name of the backbone (checked against the checkpoint)")
    p.add_argument("--backbone-weights", default=None, help="when the checkpoint holds no backbone weights")
    p.add_argument("--dataset", default=None, help="dataset name (default: the cache's)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: the dataset's offline location)")
    p.add_argument("--split", default="holdout", help="split of the cache to run (default holdout)")
    p.add_argument("--cache", default=None, help="the cache the configurations were searched on "
                                                 "(default: the bundled cache, if it is that one)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every configuration of the file (the default)")
    which.add_argument("--id", default=None, help="only the configuration with this id")
    p.add_argument("--max-configs", type=positive_int, default=None,
                   help="with many configurations: this many, spread over the predicted cost range")
    p.add_argument("--report", required=True, help="JSON report to write")
    p.add_argument("--plot", default=None, help="figure to write (png, pdf, svg, ...)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing --report / --plot files (each is announced)")
    add_timing_options(p, tolerance=1e-6)
    p.add_argument("--device", type=device_option, default=None,
                   help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--threads", type=threads, default=None,
                   help="torch CPU threads (default: the cost table's, else torch's)")
    p.add_argument("--cost-table", type=table_name_option, default=None, metavar="NAME",
                   help="predict each configuration's time from this cost table of the cache (python -m "
                        "exits.profile) and time it at the table's batch size (default: the one a time export "
                        "was searched on, at its batch size)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each stage (segments and head) as one graph, and the base model")
    p.add_argument("--channels-last", action="store_true",
                   help="channels-last weights and inputs, for the base model too (often faster on CPU)")
    p.add_argument("--num-workers", type=non_negative_int, default=0, help="data loader worker processes")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--skip-integrity-check", action="store_true",
                   help="skip the checksums and value scan of the cache (on by default, at every size)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _time_target(args: argparse.Namespace, doc: dict, cache: Any, device: torch.device, memory: str) -> Any:
    """The cost table to predict time from (``exits.time_prediction``) with its warnings given; the torch
    threads set (``--threads``, else the table's). ``memory``: the freed-memory policy the run holds."""
    from data_cache.cli_types import warn

    from .measure import describe_machine
    from .time_prediction import Machine, machine_lines, resolve_time_target

    target, lines = resolve_time_target(doc, cache, args.cost_table, runtime="eager", source=args.config,
                                        rebatch=args.rebatch)
    threads = workers_threads(args.workers, args.threads, target.threads if target is not None else None, ExitsError)
    if threads:
        torch.set_num_threads(threads)
    if target is not None:
        info = describe_machine(device)
        lines += tuple(machine_lines(target, Machine(str(device), info.get("gpu", info["cpu"]),
                                                     torch.get_num_threads(), memory)))
        if args.workers > 1:
            lines += (workers_line(args.workers, target.threads),)
        if args.compile:
            lines += ("--compile: the cost table timed the eager runtime's units, so its prediction is not the "
                      "compiled run's (docs/runtime.md, 'Compiled stages')",)
    for line in lines:
        warn(line)
    return target


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 with one line on bad input."""
    from data_cache.outputs import cli_entry

    return cli_entry(lambda: _main(argv))


def _check_files(args: argparse.Namespace) -> tuple[dict[str, Path], dict[str, Any]]:
    """The checked ``--report`` / ``--plot`` paths (inputs never overwritten) and their ownership kinds."""
    from data_cache.bundled import bundled_cache_path
    from data_cache.cli_types import PLOT_SUFFIXES
    from data_cache.outputs import check_outputs
    from data_cache.ownership import json_kind, suffix_kind

    kinds = {"--report": json_kind(REPORT_FORMAT), "--plot": suffix_kind("figure", PLOT_SUFFIXES)}
    outputs = check_outputs([("--report", args.report), ("--plot", args.plot)], overwrite=args.overwrite,
                            suffixes={"--report": (".json",), "--plot": PLOT_SUFFIXES}, kinds=kinds,
                            inputs=[("--config", args.config), ("--checkpoint", args.checkpoint),
                                    ("--backbone-weights", args.backbone_weights),
                                    ("--cache", args.cache or bundled_cache_path()),
                                    ("--data-root", args.data_root)])
    return outputs, kinds


def _open_runtime(args: argparse.Namespace) -> tuple[ExitRuntime, Any, dict[str, Any], Any]:
    """The runtime of ``--config`` on the checkpoint's model (its table verified against the cache), the cache,
    the checkpoint and the time target (``_time_target``)."""
    from .checkpoints import model_from_checkpoint, read_checkpoint
    from .memory import hold_freed_memory
    from .runtime import ExitRuntime, read_config_file

    doc = read_config_file(args.config)
    ckpt = read_checkpoint(args.checkpoint)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model_from_checkpoint(ckpt, model_name=args.model, backbone_weights=args.backbone_weights)
    cache = open_searched_cache(args.cache, (doc.get("cache") or {}).get("fingerprint"),
                                skip_integrity_check=args.skip_integrity_check)
    # the runtime keeps freed memory (exits.memory); held before the table is compared with this run
    target = _time_target(args, doc, cache, device, hold_freed_memory()["policy"])
    with warning_lines():   # what the verification of the table against the cache has to say
        runtime = ExitRuntime(model, args.config, cache=cache, device=device, compile=args.compile,
                              channels_last=args.channels_last, check_inputs=False)  # eval_transform's batches
    return runtime, cache, ckpt, target


def _chosen_configs(args: argparse.Namespace, runtime: ExitRuntime) -> list[ExitConfig]:
    """``--id``'s configuration, else ``--max-configs`` spread over the cost range (a warning when many are timed)."""
    from data_cache.cli_types import warn

    configs = [runtime.set_config(args.id)] if args.id is not None else spread(runtime.configs, args.max_configs)
    if len(configs) > MANY_CONFIGS and not args.no_timing:
        warn(f"{args.config}: {len(configs)} configurations, each run on the whole split and timed in "
             f"{args.rounds} rounds (minutes each on a CPU); --max-configs N validates N spread over the cost "
             "range, --id one, --no-timing skips the timing")
    return configs


def _timing_inputs(args: argparse.Namespace, loader: list[Any], target: Any,
                   device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Throughput batches (at the time target's batch size, else ``--batch-size``) and batch-1 latency samples."""
    timing: list[torch.Tensor] = []
    latency: list[torch.Tensor] = []
    if not args.no_timing:
        xs = torch.cat([b[0] for b in loader])
        timing = ([x.to(device) for x in timing_batches(xs, target.batch_size, args.timing_samples)] if target
                  else list(xs[: args.timing_samples].to(device).split(args.batch_size)))
        if not args.no_latency:
            latency = [x.unsqueeze(0).to(device) for x in xs[: args.latency_samples]]
    return timing, latency


def _write(args: argparse.Namespace, outputs: dict[str, Path], kinds: dict[str, Any], report: dict[str, Any]) -> None:
    """The report and the figure, each written atomically."""
    from data_cache.outputs import atomic_outputs

    with atomic_outputs(list(outputs.items()), overwrite=args.overwrite, kinds=kinds) as tmps:
        files = dict(zip(outputs, tmps, strict=True))
        files["--report"].write_text(json.dumps(report, indent=1) + "\n")
        if args.plot:
            plot_report(report, files["--plot"], fmt=outputs["--plot"].suffix.lstrip(".").lower())


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    from torch.utils.data import DataLoader

    from data_cache import CacheError
    from data_cache.cli_types import warn
    from data_cache.outputs import OutputError

    say = progress_printer(args.quiet)
    try:
        outputs, kinds = _check_files(args)
        if args.split == "search":
            warn(SEARCH_SPLIT_WARNING)
        elif args.split == "calibration":
            warn(CALIBRATION_WARNING)
        runtime, cache, ckpt, target = _open_runtime(args)
        configs = _chosen_configs(args, runtime)
        check_timeable(target, configs)
        rows = split_rows(args.split, cache, ckpt, dataset=args.dataset, data_root=args.data_root)
        say(f"loading {len(rows)} samples of {args.split}")
        loader = list(DataLoader(rows, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers))
        timing, latency = _timing_inputs(args, loader, target, runtime.device)
        report = validate(runtime, configs, loader, split=args.split, cache=cache, timing_batches=timing,
                          latency_samples=latency, rounds=args.rounds, tolerance=args.tolerance, progress=say,
                          time_model=target.model if target else None,
                          rebatch=serves_rebatched(runtime.doc or {}, args.rebatch), workers=args.workers)
        if target is not None:
            report["cost_table"] = target.record()
        # a runtime of a --config on a cache verifies its table
        assert runtime.verification is not None
        report.update(config_file=str(args.config), verified=runtime.verification.describe(), compile=args.compile,
                      channels_last=args.channels_last)
        _write(args, outputs, kinds, report)
    except (CacheError, ExitsError, OutputError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"report written to {args.report}")
    if args.plot:
        print(f"figure written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
