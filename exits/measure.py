"""Timing and reporting shared by the validations of the eager runtime and of a bundle.

Speed is always measured against a base in the same process, in rounds that alternate the base and the
configuration (``time_against_base``), so that a machine's load hits both alike; the comparison with the
cache (``CacheComparison``), the report's machine record (``describe_machine``) and its table
(``format_rows``) are shared too.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract.costs import MEASURED_COST_MODEL, get_cost_model

__all__ = ["sync", "describe_machine", "spread", "timing_batches", "time_against_base", "CacheComparison",
           "exit_fractions", "format_rows", "slower_at_batch1", "SPEED_COLUMNS", "add_timing_options",
           "workers_threads", "workers_line", "parallel_stream"]


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_machine(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, torch threads and version, the device (and GPU name), the load average."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "device": str(device), "torch": torch.__version__, "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    return info


def spread(configs: list, n: int | None) -> list:
    """At most ``n`` configurations spread evenly over the predicted cost range (ends kept)."""
    if n is None or len(configs) <= n:
        return configs
    order = sorted(configs, key=lambda c: c.relative_cost("search") or 0.0)
    picks = sorted({int(round(i)) for i in np.linspace(0, len(order) - 1, n)})
    return [order[i] for i in picks]


def timing_batches(xs: Any, batch_size: int, n_samples: int) -> list[Any]:
    """``max(1, n_samples // batch_size)`` full batches of ``batch_size`` rows of ``xs`` (a tensor or an array),
    its rows cycled where it has fewer: a time prediction at batch B is checked on batches of exactly B."""
    n_batches = max(1, n_samples // batch_size)
    rows = np.arange(n_batches * batch_size) % len(xs)
    picked = xs[torch.from_numpy(rows)] if isinstance(xs, torch.Tensor) else xs[rows]
    return [picked[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]


def _time_batches(fn: Callable[[Any], Any], batches: Sequence[Any], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for b in batches:
        fn(b)
    sync(device)
    return time.perf_counter() - t0


def _time_stream(fn: Callable[[Sequence[Any]], Any], batches: Sequence[Any], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn(batches)
    sync(device)
    return time.perf_counter() - t0


def _latencies(fn: Callable[[Any], Any], samples: Sequence[Any], device: torch.device) -> list[float]:
    out = []
    for x in samples:
        sync(device)
        t0 = time.perf_counter()
        fn(x)
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def time_against_base(base: Callable[[Any], Any], fn: Callable[[Any], Any], timing_batches: Sequence[Any],
                      latency_samples: Sequence[Any], rounds: int, device: torch.device, *,
                      stream: Callable[[Sequence[Any]], Any] | None = None,
                      base_stream: Callable[[Sequence[Any]], Any] | None = None, rebatch: bool = False,
                      workers: int = 1) -> dict[str, Any]:
    """Alternate ``rounds`` of ``base`` and ``fn`` after a warm-up: ``b64`` (median times over
    ``timing_batches``, throughputs, speedup, per round) and ``b1`` (per-sample latencies over
    ``latency_samples``: medians, means, speedups); each only when given inputs. ``stream``: the configuration
    takes the timing batches as one stream (``stream(batches)``, re-batched or data-parallel serving) instead of
    ``fn`` per batch, and ``base_stream`` the base model's; ``b64`` records how the stream is served (``rebatch``,
    ``workers``)."""
    res: dict[str, Any] = {}
    if timing_batches:
        for b in timing_batches[:2]:
            base(b)
            if stream is None:
                fn(b)
        if stream is not None:
            stream(timing_batches[:2])
        if base_stream is not None:
            base_stream(timing_batches[:2])
        tb, tc = [], []
        for _ in range(rounds):
            tb.append(_time_batches(base, timing_batches, device) if base_stream is None
                      else _time_stream(base_stream, timing_batches, device))
            tc.append(_time_batches(fn, timing_batches, device) if stream is None
                      else _time_stream(stream, timing_batches, device))
        n = sum(len(b) for b in timing_batches)
        mb, mc = statistics.median(tb), statistics.median(tc)
        res["b64"] = {"n_samples": n, "batch_size": len(timing_batches[0]), "base_s": mb, "config_s": mc,
                      "base_throughput": n / mb, "throughput": n / mc, "speedup": mb / mc,
                      "speedup_per_round": [b / c for b, c in zip(tb, tc, strict=True)],
                      "rebatch": rebatch, "workers": workers}
    if latency_samples:
        for f in (base, fn):
            for x in latency_samples[:5]:
                f(x)
        lb, lc = [], []
        for _ in range(rounds):
            lb += _latencies(base, latency_samples, device)
            lc += _latencies(fn, latency_samples, device)
        res["b1"] = {"n_samples": len(latency_samples), "rounds": rounds,
                     "base_median_s": statistics.median(lb), "median_s": statistics.median(lc),
                     "base_mean_s": statistics.fmean(lb), "mean_s": statistics.fmean(lc),
                     "speedup_median": statistics.median(lb) / statistics.median(lc),
                     "speedup_mean": statistics.fmean(lb) / statistics.fmean(lc)}
    return res


class CacheComparison:
    """What the cache predicts on one split for the configurations a validation runs, and how a measured run
    agrees with it sample by sample.

    A configuration is a :class:`contract.ExitConfig` (the runtime's and the bundle router's): its ``exits``
    (cache exit indices), ``thresholds``, ``score`` and ``predicted``. The split's scores are read once per score
    kind. ``objective`` is the export's cost model: its predicted costs are compared with the MACs a run measures
    only when it is that quantity (``contract.costs.MEASURED_COST_MODEL``)."""

    def __init__(self, cache: Any, split: str, tolerance: float, objective: str = MEASURED_COST_MODEL):
        self.cache, self.split, self.tolerance, self.objective = cache, split, tolerance, objective
        self.labels = np.asarray(cache.labels(split))
        self.topk_ids = cache.topk_ids(split)
        self.positions = np.array([e.position for e in cache.exits])
        self.exit_names = [e.name for e in cache.exits]
        self._problems: dict[tuple, Any] = {}

    @property
    def n(self) -> int:
        return len(self.labels)

    def _problem(self, config: Any) -> Any:
        """The split's problem scoring ``config``'s rules, learned ones with the params it carries (never refitted)."""
        from search.learned import config_params, params_key
        from search.problem import ExitProblem

        rules, params = config.rule_set, config_params([config])
        key = (rules, params_key(params))
        if key not in self._problems:
            self._problems[key] = ExitProblem(self.cache, self.split, score=rules[0], rules=rules, params=params)
        return self._problems[key]

    def leave(self, config: Any) -> np.ndarray:
        """The exit (cache index) each sample of the split leaves at under ``config``, as the search assigns it."""
        return self._problem(config).assign(config)

    def compare(self, config: Any, got_exit: np.ndarray, got_pred: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(predicted, agreement)`` of ``config`` whose run left each sample at ``got_exit`` (the cache's exit
        index) with prediction ``got_pred``: the cache's accuracy, relative MACs and exit fractions (computed here,
        never the export's word; where the export's objective is not MACs its own relative cost, verified by
        ``search.verify``, is kept as ``relative_cost_objective``); the share of samples with the same exit and
        prediction as
        ``search.ExitProblem.assign`` gives, and the disagreements counted by kind, apart those where a cached
        score at an exit the sample reached lies within ``tolerance`` of that exit's threshold."""
        problem = self._problem(config)
        want_exit = self.leave(config)
        want_pred = np.asarray(self.topk_ids[want_exit, 0, np.arange(self.n)])
        ev = problem.evaluate_one(config)
        other_exit, other_pred = got_exit != want_exit, got_pred != want_pred
        differ = other_exit | other_pred
        near = np.zeros(self.n, dtype=bool)
        if differ.any():
            reached = self.positions[want_exit]
            for e, t, r in zip(config.exits, config.thresholds, config.rule_names, strict=True):
                close = np.abs(problem.scores_of(r)[e].astype(np.float64) - t) <= self.tolerance
                near |= close & (reached >= self.positions[e])
        predicted = {"accuracy": ev.accuracy, "relative_cost": ev.relative_cost,
                     "exit_fractions": list(ev.exit_fractions)}   # recomputed: never the export's word
        if self.objective != MEASURED_COST_MODEL:  # the export's costs are not MACs: the cache's MACs compared
            predicted["relative_cost_objective"] = (config.predicted.get(self.split) or {}).get("relative_cost")
        agreement = {"agreement": float(1.0 - differ.mean()), "n_disagree": int(differ.sum()),
                     "n_disagree_near_threshold": int((differ & near).sum()),
                     "n_disagree_exit": int(other_exit.sum()), "n_disagree_prediction": int(other_pred.sum())}
        return predicted, agreement


def exit_fractions(exits: np.ndarray, enabled: list[int], final: int) -> list[float]:
    """Fraction of samples leaving at each enabled exit, then at the final exit."""
    return [float(np.mean(exits == e)) if len(exits) else 0.0 for e in (*enabled, final)]


def format_rows(report: dict[str, Any], base: str, footnote: str, *,
                overhead: Callable[[dict[str, Any]], str] | None = None) -> list[str]:
    """The table of a validation report: a heading on ``base`` (what the configurations were timed
    against), one line per configuration (predicted vs measured accuracy and cost, agreement, the MAC
    estimate of the speedup, measured speedups at batch 64 and at batch 1 by mean and by median latency),
    then ``footnote``, then one line per configuration slower than its base at batch 1 saying why
    (``overhead(entry)``: what the enabled exits add to every call, see ``slower_at_batch1``)."""
    b = report["base"]
    lines = [f"{report['split']}: {report['n_samples']} samples; {base} accuracy {b['measured']['accuracy']:.4%} "
             f"(cache {b['predicted']['accuracy']:.4%}), {b['measured']['macs_per_sample'] / 1e6:.3f} MMACs/sample",
             f"{'id':<16} {'exits':>5} {'acc pred':>9} {'acc meas':>9} {'cost pred':>9} {'cost meas':>9} "
             f"{'agree':>8} {'near':>4} {'MAC est':>7} {'b64 x':>6} {'b1 mean':>7} {'b1 med':>6}"]
    timed = any("predicted_speedup" in c for c in report["configs"])
    if timed:
        lines[-1] += f" {'t pred':>6} {'t meas':>6} {'t err':>7} {'MAC err':>7}"
    objective = report.get("objective", MEASURED_COST_MODEL)
    for c in report["configs"]:
        p, m = c["predicted"], c["measured"]
        speeds = [f"{c['throughput_speedup_b64']:>6.2f}" if "throughput_speedup_b64" in c else f"{'-':>6}",
                  f"{c['latency_b1']['speedup_mean']:>7.2f}" if "latency_b1" in c else f"{'-':>7}",
                  f"{c['latency_b1']['speedup_median']:>6.2f}" if "latency_b1" in c else f"{'-':>6}"]
        if timed:
            speeds += [f"{c[k]:>6.2f}" if k in c else f"{'-':>6}" for k in ("predicted_speedup", "measured_speedup")]
            speeds += [f"{c[k]:>+7.1%}" if k in c else f"{'-':>7}" for k in ("speedup_error", "mac_speedup_error")]
        lines.append(f"{c['id']:<16} {len(c['exits']):>5} {p['accuracy']:>9.4%} {m['accuracy']:>9.4%} "
                     f"{p['relative_cost']:>9.4f} {m['relative_cost']:>9.4f} {c['agreement']:>8.4%} "
                     f"{c['n_disagree_near_threshold']:>4} {c['mac_estimate_speedup']:>7.2f} {' '.join(speeds)}")
    lines.append(footnote)
    workers = report.get("workers", 1)
    if workers > 1:
        lines.append(f"b64 x: served on {workers} workers of one thread each, each taking the next batch when free "
                     f"(run_batches(..., workers={workers}){', re-batched' if report.get('rebatch') else ''}); the "
                     "base model the same way")
    elif report.get("rebatch"):
        lines.append("b64 x: the configuration served re-batched (its batches as one stream, every segment on full "
                     "batches: run_batches(..., rebatch=True)); the base model batch by batch")
    table = report.get("cost_table")
    if timed and table:
        lines.append(f"with a cost table, b64 x is timed at the cost table's batch size {table['batch_size']}; "
                     "t pred / t meas: speed-up "
                     f"over the base predicted by cost table {table['name']!r} ({table['device_name']}, "
                     f"{table['threads'] or 'default'} threads, {table['runtime']}) and measured; t err: predicted / "
                     "measured - 1; MAC err: the same for the MAC estimate")
    lines += [line for c in report["configs"] if (line := slower_at_batch1(c, overhead))]
    if objective != MEASURED_COST_MODEL:
        quantity = get_cost_model(objective).quantity
        lines.append(f"note: objective {objective!r} ({quantity}) is not what a run measures: cost pred / cost meas "
                     "are the cache's and the run's relative MACs; the export's predicted "
                     f"{objective} cost is in the report (predicted.relative_cost_objective); "
                     "the speedups measure time")
    return lines


SPEED_COLUMNS = ("MAC est: 1 / measured relative MACs, what the MACs alone predict (an estimate, not a bound: "
                 "measured speedups can lie above or below it); b64 x: measured throughput speedup at batch 64; "
                 "b1 mean / b1 med: batch-1 speedups by mean latency (what throughput at batch 1 follows) and by "
                 "median latency")

REMEDY = ("search on time at batch 1 (python -m exits.profile ... --name T, then search.pareto --objective time "
          "--cost-table T --batch-size 1: it enables fewer exits where they do not pay) or cap the exits "
          "(--max-exits K)")


def slower_at_batch1(entry: dict[str, Any], overhead: Callable[[dict[str, Any]], str] | None = None) -> str:
    """One line when a configuration's mean batch-1 latency is above its base's: why (``overhead(entry)``: what
    its enabled exits add to every call, a fixed cost one image does not amortise) and the remedy; "" otherwise."""
    b1 = entry.get("latency_b1")
    if not b1 or b1["speedup_mean"] >= 1.0:
        return ""
    k = len(entry["exits"])
    why = overhead(entry) if overhead else f"each of its {k} enabled exits adds a head and a step"
    return (f"{entry['id']}: slower than its base at batch 1 (mean speedup {b1['speedup_mean']:.2f}x, base "
            f"{1e3 * b1['base_mean_s']:.3f} ms per image): {why}, a fixed cost per call that one image does not "
            f"amortise against its {100 * (1 - entry['measured']['relative_cost']):.0f}% MAC saving; remedy: {REMEDY}")


def workers_threads(workers: int, asked: int | None, default: int | None, error: type[Exception]) -> int | None:
    """The intra-op threads of a run: ``asked`` (``--threads``), else ``default`` (the cost table's); one per worker
    with ``--workers`` above 1 (``error`` in one line when ``--threads`` asks for more)."""
    if workers == 1:
        return asked or default
    if asked not in (None, 1):
        raise error(f"--workers {workers} runs one intra-op thread per worker; --threads {asked} asks for more "
                    "(leave it out or give 1)")
    return 1


def workers_line(workers: int, threads: int | None) -> str:
    """The warning a time prediction on ``workers`` gets: it is the one-thread table's."""
    return (f"--workers {workers}: the predicted speed-up is the {threads or 'default'}-thread cost table's, which "
            "assumes the base model and the configuration gain alike from the workers (the eager configuration "
            "gains less: docs/runtime.md, 'Data-parallel workers')")


def parallel_stream(fn: Callable[[Any], Any], workers: int) -> Callable[[Sequence[Any]], Any]:
    """``fn`` over a stream of batches on ``workers`` threads (the base model served data-parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    def run(batches: Sequence[Any]) -> list[Any]:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, batches))

    return run


def add_timing_options(p: argparse.ArgumentParser, *, tolerance: float) -> None:
    """The options both validation command lines share: batch size, what is timed and how, the tolerance."""
    from data_cache.cli_types import non_negative_float, positive_int

    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="batch size of the runs and the throughput timing")
    p.add_argument("--timing-samples", type=positive_int, default=4096, help="samples timed at batch 64 (default 4096)")
    p.add_argument("--latency-samples", type=positive_int, default=200, help="samples timed at batch 1 (default 200)")
    p.add_argument("--rounds", type=positive_int, default=3, help="timing rounds, base and configuration alternating")
    p.add_argument("--no-timing", action="store_true", help="skip every speed measurement")
    p.add_argument("--rebatch", action="store_true",
                   help="time throughput as re-batched serving: the timing batches run as one stream whose survivors "
                        "wait before each segment until a full batch is there (run_batches(..., rebatch=True)); the "
                        "time prediction is the re-batched one (an export searched with search.pareto --rebatch "
                        "is validated this way without the flag)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="time throughput as data-parallel serving: N worker threads of one intra-op thread each, "
                        "each taking the next batch when free (run_batches(..., workers=N)), the base model the same "
                        "way (default 1: batch after batch on --threads threads)")
    p.add_argument("--no-latency", action="store_true", help="skip the batch-1 latency measurement")
    p.add_argument("--tolerance", type=non_negative_float, default=tolerance,
                   help="a disagreement whose cached score is this close to a threshold counts as float rounding")
