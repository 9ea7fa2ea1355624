"""``python -m exits.validate``: run exported configurations on the real model and compare with the cache.

For every chosen configuration of an ``exitconfig/1`` export, on one split of the dataset (the cache's
samples, joined on ``sample_index``):

- measured accuracy and MACs: the runtime's per-sample accounting from the unit table and, independently,
  ``FlopCounterMode`` over the whole run (MACs = FLOPs / 2);
- per-sample agreement with the cache: same exit and same prediction as ``search.ExitProblem.assign``
  gives; disagreements where a cached score lies within ``--tolerance`` of a threshold it was compared
  with are counted apart (float rounding: batch composition changes the last bits of a convolution);
- throughput at batch 64 and latency at batch 1 by mean and median (after warm-up), measured in rounds that alternate
  the plain base model (the backbone's forward alone) and the configuration in the same process;
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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from contract.costs import MEASURED_COST_MODEL

from .measure import (SPEED_COLUMNS, CacheComparison, add_timing_options, describe_machine, exit_fractions,
                      format_rows, spread, time_against_base, timing_batches)
from .time_prediction import plot_time_prediction, time_entry, time_summary
from .validation_inputs import CALIBRATION_WARNING, open_searched_cache, split_rows, warning_lines

if TYPE_CHECKING:
    from contract import ExitConfig

    from .runtime import ExitRuntime

__all__ = ["REPORT_FORMAT", "validate", "main"]

REPORT_FORMAT = "exitvalidation/1"
MANY_CONFIGS = 16   # more configurations than this, all timed: a warning says what it costs


def _counted_macs(fn: Callable[[], Any]) -> tuple[float, Any]:
    """MACs (FLOPs / 2) of ``fn()`` by ``FlopCounterMode`` (attention included), and its result."""
    from torch.utils.flop_counter import FlopCounterMode

    from .macs import ATTENTION_FORMULAS

    with FlopCounterMode(display=False, custom_mapping=ATTENTION_FORMULAS) as counter:
        out = fn()
    return counter.get_total_flops() / 2, out


def validate(runtime: ExitRuntime, configs: list[ExitConfig], loader: Any, *, split: str, cache: Any, timing_batches: list[torch.Tensor],
             latency_samples: list[torch.Tensor], rounds: int = 3, tolerance: float = 1e-6,
             progress: Callable[[str], None] | None = None, time_model: Any = None) -> dict[str, Any]:
    """Run ``configs`` (``contract.ExitConfig``) of ``runtime`` over ``loader`` (batches ``(x, labels, sample_index)``
    in the cache's row order) and time them against the base model; return the report dictionary.

    With ``time_model`` (``search.time_cost.TimeCostModel``; ``timing_batches`` then at its batch size) each
    configuration also gets its predicted speed-up against the measured one (``exits.time_prediction``)."""
    device = runtime.device
    objective = runtime.objective
    say = progress or (lambda msg: None)
    comparison = CacheComparison(cache, split, tolerance, objective)
    labels, n = comparison.labels, comparison.n
    base_counted, _ = _counted_macs(lambda: runtime.base_forward(timing_batches[0][:1] if timing_batches
                                                                 else next(iter(loader))[0][:1]))
    # base accuracy, measured on the real model
    say("base model")
    seen_labels, base_correct = [], 0
    for x, y, _ in loader:
        base_correct += int((runtime.base_forward(x).argmax(1).cpu() == y).sum())
        seen_labels.append(y.numpy())
    if not np.array_equal(np.concatenate(seen_labels), labels):
        from .data import DataError

        raise DataError("the dataset's labels differ from the cache's on the same sample_index; "
                        "is it another dataset or version?")

    reports = []
    for c in configs:
        say(f"config {c.id}")
        counted, result = _counted_macs(lambda: runtime.run_batches(loader, c))
        got_exit, got_pred = result.exits.numpy(), result.predictions.numpy()
        predicted, agreement = comparison.compare(c, got_exit, got_pred)
        t = time_against_base(runtime.base_forward, lambda x, c=c: runtime.run(x, c), timing_batches,
                              latency_samples, rounds, device)
        entry = {
            "id": c.id,
            "exits": [{"name": runtime.model.exits[e].name, "threshold": t} for e, t in zip(c.exits, c.thresholds)],
            "score": c.score,
            "predicted": predicted,
            "measured": {"accuracy": float(np.mean(got_pred == labels)),
                         "relative_cost": counted / n / base_counted,
                         "relative_cost_accounted": result.relative_cost,
                         "macs_per_sample": counted / n,
                         "exit_fractions": exit_fractions(got_exit, list(c.exits),
                                                          len(runtime.model.exits) - 1)},
            **agreement,
            "mac_estimate_speedup": 1.0 / max(result.relative_cost, 1e-12),
        }
        cert = c.predicted.get("certificate")
        if cert is not None:
            entry["certificate"] = dict(cert)
            entry["measured_drop"] = base_correct / n - entry["measured"]["accuracy"]
        if "b64" in t:
            entry["throughput_speedup_b64"] = t["b64"]["speedup"]
            entry["throughput_b64"] = t["b64"]
            entry["throughput_vs_mac_estimate"] = t["b64"]["speedup"] / entry["mac_estimate_speedup"]
        if "b1" in t:
            entry["latency_speedup_b1"] = t["b1"]["speedup_median"]
            entry["latency_speedup_b1_mean"] = t["b1"]["speedup_mean"]
            entry["latency_b1"] = t["b1"]
        if time_model is not None:
            entry.update(time_entry(time_model, c, comparison.leave(c), t.get("b64"),
                                    1.0 / max(predicted["relative_cost"], 1e-12)))
        reports.append(entry)
    base_acc = base_correct / n
    return {"format": REPORT_FORMAT, "split": split, "n_samples": n, "tolerance": tolerance, "objective": objective,
            "cache": {"fingerprint": cache.fingerprint},
            "model": {"name": runtime.model.model_name, "fingerprint": runtime.model.fingerprint()},
            "machine": describe_machine(device), "rounds": rounds,
            "base": {"predicted": {"accuracy": float(np.mean(np.asarray(comparison.topk_ids[-1, 0]) == labels)),
                                   "relative_cost": 1.0},
                     "measured": {"accuracy": base_acc, "macs_per_sample": base_counted,
                                  "macs_unit_table": runtime.base_macs}},
            "configs": reports, **({"time_prediction": time_summary(reports)} if time_model is not None else {})}


# -- figure and table ----------------------------------------------------------------------------

MIN_ACCURACY_SPAN = 2.0   # points: the accuracy axis never spans less, so a small drop does not look like a cliff


def _accuracy_limits(values: list[float]) -> tuple[float, float]:
    """Accuracy axis limits (points) around ``values`` with a margin, at least ``MIN_ACCURACY_SPAN`` wide,
    shifted to stay within [0, 100]."""
    lo, hi = min(values), max(values)
    pad = max(0.08 * (hi - lo), 0.5 * (MIN_ACCURACY_SPAN - (hi - lo)))
    lo, hi = lo - pad, hi + pad
    shift = max(0.0, -lo) - max(0.0, hi - 100.0)
    return max(0.0, lo + shift), min(100.0, hi + shift)


def _label_points(ax: Any, xs: list[float], ys: list[float], ids: list[str]) -> None:
    for x, y, cid in zip(xs, ys, ids):
        if np.isfinite(x) and np.isfinite(y):
            ax.annotate(cid, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small", color="0.3")


def plot_report(report: dict[str, Any], path: str | Path | None = None, *, fmt: str | None = None) -> Any:
    """Predicted vs measured accuracy against relative MACs (left); measured speedup over the base model against
    relative MACs on a log axis, with the MAC estimate 1 / relative MACs (right). Every configuration is labelled
    with its id; the accuracy axis spans at least ``MIN_ACCURACY_SPAN`` points.

    Returns the Figure; saves it to ``path`` when given (``fmt``: the file format, default ``path``'s suffix)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = sorted(report["configs"], key=lambda c: c["measured"]["relative_cost"])
    ids = [c["id"] for c in rows]
    cost = [c["measured"]["relative_cost"] for c in rows]
    timed = any("measured_speedup" in c for c in rows)
    fig = Figure(figsize=(18 if timed else 12, 4.8), layout="constrained")
    ax1, ax2, *ax3 = fig.subplots(1, 3 if timed else 2)
    pred = [100 * c["predicted"]["accuracy"] for c in rows]
    meas = [100 * c["measured"]["accuracy"] for c in rows]
    base = 100 * report["base"]["measured"]["accuracy"]
    ax1.plot([c["predicted"]["relative_cost"] for c in rows], pred, "o-", label="predicted by the cache")
    ax1.plot(cost, meas, "x--", ms=9, label="measured on the model")
    ax1.plot([1.0], [base], "k*", ms=12, label=f"base model ({base:.2f}%)")
    _label_points(ax1, cost, meas, ids)
    ax1.set_ylim(*_accuracy_limits(pred + meas + [base]))
    ax1.set_xlabel("relative MACs (base model = 1)")
    ax1.set_ylabel(f"top-1 accuracy on {report['split']} (%)")
    ax1.set_title("predicted vs measured")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize="small")
    xs = np.linspace(min(cost + [1.0]) * 0.9, 1.0, 100)
    ax2.plot(xs, 1 / xs, "k-", lw=1, label="MAC estimate: 1 / relative MACs")
    speeds = []
    for key, marker, label in (("throughput_speedup_b64", "o", "throughput, batch 64"),
                               ("latency_speedup_b1_mean", "s", "mean latency, batch 1")):
        ys = [c.get(key, np.nan) for c in rows]
        if any(np.isfinite(ys)):
            ax2.plot(cost, ys, marker, mfc="none" if marker == "s" else None, label=label)
            speeds += [y for y in ys if np.isfinite(y)]
            if key == "throughput_speedup_b64" or not any("throughput_speedup_b64" in c for c in rows):
                _label_points(ax2, cost, ys, ids)
    ax2.axhline(1.0, color="grey", lw=0.8)
    ax2.set_yscale("log")
    lo, hi = min(speeds + [1.0]) / 1.25, max(speeds + [1 / min(cost + [1.0])]) * 1.25
    ax2.set_ylim(lo, hi)
    ticks = [t for t in (0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 1, 1.2, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100) if lo <= t <= hi]
    ax2.set_yticks(ticks, [f"{t:g}x" for t in ticks])
    ax2.set_yticks([], minor=True)
    ax2.set_xlabel("relative MACs (base model = 1)")
    ax2.set_ylabel("measured speedup over the base model (log)")
    ax2.set_title(f"measured speedup ({report['machine']['device']}, torch threads: "
                  f"{report['machine']['torch_threads']})")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize="small")
    if timed:
        t = report["cost_table"]
        plot_time_prediction(ax3[0], rows, f"predicted vs measured speed-up, batch {t['batch_size']} "
                                           f"(cost table {t['name']})")
    if path is not None:
        fig.savefig(path, dpi=110, format=fmt)
    return fig


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
    p.add_argument("--overwrite", action="store_true", help="replace existing --report / --plot files (each is announced)")
    add_timing_options(p, tolerance=1e-6)
    p.add_argument("--device", type=device_option, default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--threads", type=threads, default=None,
                   help="torch CPU threads (default: the cost table's, else torch's)")
    p.add_argument("--cost-table", default=None, metavar="NAME",
                   help="predict each configuration's time from this cost table of the cache (python -m "
                        "exits.profile) and time it at the table's batch size (default: the one a time export "
                        "was searched on)")
    p.add_argument("--compile", action="store_true", help="torch.compile every segment and head")
    p.add_argument("--channels-last", action="store_true",
                   help="channels-last weights and inputs, for the base model too (often faster on CPU)")
    p.add_argument("--num-workers", type=non_negative_int, default=0, help="data loader worker processes")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--skip-integrity-check", action="store_true",
                   help="skip the checksums and value scan of the cache (on by default, at every size)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _time_target(args: argparse.Namespace, doc: dict, cache: Any, device: torch.device) -> Any:
    """The cost table to predict time from (``exits.time_prediction``) with its warnings given; the torch
    threads set (``--threads``, else the table's)."""
    from data_cache.cli_types import warn

    from .measure import describe_machine
    from .time_prediction import Machine, machine_lines, resolve_time_target

    target, lines = resolve_time_target(doc, cache, args.cost_table, runtime="eager", source=args.config)
    threads = args.threads or (target.threads if target is not None else None)
    if threads:
        torch.set_num_threads(threads)
    if target is not None:
        info = describe_machine(device)
        lines += tuple(machine_lines(target, Machine(str(device), info.get("gpu", info["cpu"]),
                                                     torch.get_num_threads())))
    for line in lines:
        warn(line)
    return target


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 with one line on bad input."""
    from data_cache.outputs import cli_entry

    return cli_entry(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    from torch.utils.data import DataLoader

    from data_cache import CacheError
    from data_cache.cli_types import PLOT_SUFFIXES, warn
    from data_cache.bundled import bundled_cache_path
    from data_cache.outputs import OutputError, atomic_outputs, check_outputs
    from data_cache.ownership import json_kind, suffix_kind

    from .checkpoints import model_from_checkpoint, read_checkpoint
    from .errors import ExitsError
    from .runtime import ExitRuntime, read_config_file

    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        kinds = {"--report": json_kind(REPORT_FORMAT), "--plot": suffix_kind("figure", PLOT_SUFFIXES)}
        outputs = check_outputs([("--report", args.report), ("--plot", args.plot)], overwrite=args.overwrite,
                                suffixes={"--report": (".json",), "--plot": PLOT_SUFFIXES}, kinds=kinds,
                                inputs=[("--config", args.config), ("--checkpoint", args.checkpoint),
                                        ("--backbone-weights", args.backbone_weights),
                                        ("--cache", args.cache or bundled_cache_path()),
                                        ("--data-root", args.data_root)])
        if args.split == "search":
            warn("--split search: the configurations were chosen on these samples, so their measured figures are "
                 "optimistic; holdout is the independent check")
        elif args.split == "calibration":
            warn(CALIBRATION_WARNING)
        doc = read_config_file(args.config)
        ckpt = read_checkpoint(args.checkpoint)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = model_from_checkpoint(ckpt, model_name=args.model, backbone_weights=args.backbone_weights)
        cache = open_searched_cache(args.cache, (doc.get("cache") or {}).get("fingerprint"),
                                    skip_integrity_check=args.skip_integrity_check)
        target = _time_target(args, doc, cache, device)
        with warning_lines():   # what the verification of the table against the cache has to say
            runtime = ExitRuntime(model, args.config, cache=cache, device=device, compile=args.compile,
                                  channels_last=args.channels_last, check_inputs=False)  # eval_transform's batches
        configs = [runtime.set_config(args.id)] if args.id is not None else spread(runtime.configs, args.max_configs)
        if len(configs) > MANY_CONFIGS and not args.no_timing:
            warn(f"{args.config}: {len(configs)} configurations, each run on the whole split and timed in "
                 f"{args.rounds} rounds (minutes each on a CPU); --max-configs N validates N spread over the cost "
                 "range, --id one, --no-timing skips the timing")
        rows = split_rows(args.split, cache, ckpt, dataset=args.dataset, data_root=args.data_root)
        say(f"loading {len(rows)} samples of {args.split}")
        loader = list(DataLoader(rows, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers))
        timing, latency = [], []
        if not args.no_timing:
            xs = torch.cat([b[0] for b in loader])
            timing = ([x.to(device) for x in timing_batches(xs, target.batch_size, args.timing_samples)] if target
                      else list(xs[: args.timing_samples].to(device).split(args.batch_size)))
            if not args.no_latency:
                latency = [x.unsqueeze(0).to(device) for x in xs[: args.latency_samples]]
        report = validate(runtime, configs, loader, split=args.split, cache=cache, timing_batches=timing,
                          latency_samples=latency, rounds=args.rounds, tolerance=args.tolerance, progress=say,
                          time_model=target.model if target else None)
        if target is not None:
            report["cost_table"] = target.record()
        report["config_file"] = str(args.config)
        report["verified"] = runtime.verification.describe()
        report["compile"] = args.compile
        report["channels_last"] = args.channels_last
        targets = list(outputs.items())
        with atomic_outputs(targets, overwrite=args.overwrite, kinds=kinds) as tmps:
            files = dict(zip(outputs, tmps))
            files["--report"].write_text(json.dumps(report, indent=1) + "\n")
            if args.plot:
                plot_report(report, files["--plot"], fmt=outputs["--plot"].suffix.lstrip(".").lower())
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
