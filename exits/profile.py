"""``python -m exits.profile``: measure a target's time table and store it beside the cache.

On the machine it runs on, for one target (device, threads, batch size B, runtime ``eager`` or ``onnx``), it
measures each unit's time as a function of the rows it runs on, T_u(n) for n on the grid
``data_cache.cost_tables.profile_grid(B)`` (powers of two, and B): every segment, head and saver of the eager
model, or every graph of a bundle; the base model; the runtime's own per-step work (scores, threshold test,
compaction, gathers) and the final exit's scoring, all timed as a run meets them (in sweeps in execution order,
each call timed alone: :func:`measure`); and the runtime's per-batch cost (a whole run less its units). Every
batch size is warmed up and its number of calls chosen to last at least ``--min-time``; then ``--rounds`` rounds
each time every item at every n, the order of batch sizes reversed every other round. The table
keeps each median over rounds and the rounds' minimum and maximum, and records the target (device name,
threads, library versions, date, load average before and after) and the cache's and backbone's fingerprints.
It is written to ``CACHE/cost_tables/NAME.json`` (``docs/cost-model.md``, ``docs/cache-format.md``).

    python -m exits.profile --checkpoint CKPT --cache CACHE --name cpu-t1-b64 --threads 1 --batch-size 64
    python -m exits.profile --checkpoint CKPT --cache CACHE --name ort-t2 --runtime onnx --bundle BUNDLE --threads 2
"""
from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_ROUNDS", "measure", "profile_table", "main"]

# Medians over this many rounds: on a shared 2-core VM whose speed came in bursts, 5 rounds left the demo's
# predicted speed-up at batch 64 spread over 1.62-2.02 across five profiles (a base call timed slow in two of five
# rounds moves a median), 15 rounds over 1.60-1.80 (benchmarks/bench_profile_rounds.py; docs/cost-model.md,
# "How many rounds").
DEFAULT_ROUNDS = 15


def _sync(device: Any) -> Callable[[], None]:
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _time_calls(thunk: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    """Seconds per call over ``repeats`` calls."""
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        thunk()
    sync()
    return (time.perf_counter() - t0) / repeats


def _sweep(thunks: Sequence[Callable[[], Any]], repeats: int, sync: Callable[[], None]) -> list[float]:
    """Seconds per call of each thunk, run in order, one call each per sweep, ``repeats`` sweeps."""
    total = [0.0] * len(thunks)
    sync()  # then each call ends synchronised, so the next one starts on an idle device
    for _ in range(repeats):
        for i, thunk in enumerate(thunks):
            t0 = time.perf_counter()
            thunk()
            sync()
            total[i] += time.perf_counter() - t0
    return [t / repeats for t in total]


def _repeats(seconds: float, min_time: float, max_repeats: int) -> int:
    return int(min(max_repeats, max(1, round(min_time / max(seconds, 1e-7)))))


def measure(probes: Sequence[Any], grid: Sequence[int], *, rounds: int, min_time: float = 2e-3,
            max_repeats: int = 200, sync: Callable[[], None] = lambda: None,
            progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Per probe ``{name, kind, units, exit, median_s, min_s, max_s}`` over ``grid`` (``Probe`` of
    ``exits._profile_targets``).

    Items are timed as the runtime runs them: in **sweeps**, every probe once in execution order, each call timed
    alone, so each item pays the cold caches and the dispatch it pays between the others in a real run (timed in a
    loop of its own, a unit at batch 1 ran 1.7x faster here than inside a run). A probe marked ``alone`` (the base
    model, a whole run, a bundle's batch-1 call) is timed in consecutive calls (after an untimed one when a call is
    short), as a server calls it. After warm-up and call counts (sweeps enough for an item of average length to be
    timed ``min_time``, an alone probe ``10 * min_time``; at most ``max_repeats``), ``rounds`` rounds time every
    batch size (their order reversed every other round, so that a change of load hits all alike); a probe with
    ``derive`` keeps, per round, what it computes from that round's times (at least 1 ns: a difference of two
    timings). Probes marked ``paired`` are also timed, at the grid's first row count in every round, right after
    an untimed call of each paired probe (itself included; the ordered pairs shuffled per round, each pair's calls
    lasting ``10 * min_time`` as an alone probe's): their ``after``, by the previous probe's exit."""
    swept = [i for i, p in enumerate(probes) if not p.alone]
    alone = [i for i, p in enumerate(probes) if p.alone]
    thunks = [[p.make(n) for n in grid] for p in probes]
    sweep_repeats, alone_repeats = [1] * len(grid), [[1] * len(grid) for _ in probes]
    t0 = time.perf_counter()
    for j in range(len(grid)):
        row = [thunks[i][j] for i in swept]
        _sweep(row, 2, sync)  # first calls: allocations, kernel selection
        sweep_repeats[j] = _repeats(sum(_sweep(row, 1, sync)) / max(1, len(row)), min_time, max_repeats)
        for i in alone:
            _time_calls(thunks[i][j], 2, sync)
            # 10x longer: a whole model's timing at batch 1 is the denominator of every speed-up, and collect is
            # the difference of two of them
            alone_repeats[i][j] = _repeats(_time_calls(thunks[i][j], 1, sync), 10 * min_time, max_repeats)
    paired = [i for i in alone if probes[i].paired]  # each pair's calls as many as the alone timing's at grid[0]
    after: dict[tuple[int, int], list[float]] = {(a, b): [] for a in paired for b in paired}
    if progress:
        progress(f"warm-up: {len(probes)} items x {len(grid)} batch sizes in {time.perf_counter() - t0:.1f} s")
    times: list[list[list[float]]] = [[[] for _ in grid] for _ in probes]
    for r in range(rounds):
        t0 = time.perf_counter()
        for j in range(len(grid)) if r % 2 == 0 else range(len(grid) - 1, -1, -1):
            for i, t in zip(swept, _sweep([thunks[i][j] for i in swept], sweep_repeats[j], sync), strict=True):
                times[i][j].append(t)
            for i in alone if r % 2 == 0 else alone[::-1]:
                if alone_repeats[i][j] > 1:  # untimed: the calls a server makes back to back are warm
                    thunks[i][j]()
                times[i][j].append(_time_calls(thunks[i][j], alone_repeats[i][j], sync))
            if j == 0:
                for pair in random.Random(r).sample(list(after), len(after)):
                    after[pair].append(_time_after(thunks[pair[0]][0], thunks[pair[1]][0],
                                                   alone_repeats[pair[1]][0], sync))
        if progress:
            progress(f"round {r + 1}/{rounds}: {time.perf_counter() - t0:.1f} s")
    derived = [(i, p.derive) for i, p in enumerate(probes) if p.derive is not None]
    for j in range(len(grid)):
        rounds_of = [{p.name: times[i][j][r] for i, p in enumerate(probes)} for r in range(rounds)]
        for i, derive in derived:
            times[i][j] = [max(1e-9, derive(t)) for t in rounds_of]
    out = []
    for i, (p, per_n) in enumerate(zip(probes, times, strict=True)):
        out.append({"name": p.name, "kind": p.kind, "units": list(p.units), "exit": p.exit,
                    "median_s": [statistics.median(t) for t in per_n], "min_s": [min(t) for t in per_n],
                    "max_s": [max(t) for t in per_n]})
        if i in paired:
            out[-1]["after"] = {probes[a].exit: statistics.median(after[a, i]) for a in paired}
    return out


def _time_after(before: Callable[[], Any], thunk: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    """Seconds per call of ``thunk``, each call made right after an untimed call of ``before``."""
    total = 0.0
    for _ in range(repeats):
        before()
        sync()
        t0 = time.perf_counter()
        thunk()
        sync()
        total += time.perf_counter() - t0
    return total / repeats


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def _versions() -> dict[str, str]:
    import numpy
    import torch

    out = {"python": platform.python_version(), "numpy": numpy.__version__, "torch": torch.__version__}
    for mod in ("timm", "onnxruntime"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def profile_table(name: str, probes: Sequence[Any], *, cache: Any, model_fingerprint: str | None, device: Any,
                  threads: int | None, batch_size: int, runtime: str, score: str, rounds: int,
                  min_time: float = 2e-3, extra: dict[str, Any] | None = None,
                  progress: Callable[[str], None] | None = None) -> Any:
    """Measure ``probes`` and return the ``TimeTable`` ``name`` for ``cache`` (not written)."""
    from data_cache.cost_tables import TimeTable, parse_cost_table, profile_grid

    from .measure import describe_machine
    from .memory import memory_policy

    grid = profile_grid(batch_size)
    load_before = _loadavg()
    items = measure(probes, grid, rounds=rounds, min_time=min_time, sync=_sync(device), progress=progress)
    machine = describe_machine(device)
    target = {"device": str(device), "device_name": machine.get("gpu", machine["cpu"]), "cores": machine["cores"],
              "threads": threads, "batch_size": batch_size, "runtime": runtime, "score": score,
              "versions": _versions(), "platform": machine["platform"],
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_before": load_before,
              "loadavg_after": _loadavg(), **({"memory": memory_policy()} if runtime == "eager" else {}),
              **(extra or {})}
    doc = {"format": "costtable/1", "name": name, "cache": {"fingerprint": cache.fingerprint},
           "model": {"fingerprint": model_fingerprint}, "target": target,
           "measurement": {"rounds": rounds, "min_time_s": min_time, "order": "sweeps in execution order, "
                           "each call timed alone; base and the whole run in consecutive calls; a bundle's "
                           "batch-1 paths in consecutive calls and after each path",
                           "statistic": "median over rounds",
                           "spread": "min and max over rounds", "grid": "powers of two below the batch size, and it"},
           "grid": list(grid), "items": items}
    table: TimeTable = parse_cost_table(doc, f"cost table {name!r}")
    return table


# -- command line ---------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    from data_cache.cli_types import (
        CommandParser,
        int_at_least,
        positive_float,
        positive_int,
        seed,
        threads,
    )
    from data_cache.cost_tables import MAX_BATCH_SIZE, table_name_option

    from .devices import device_option

    p = CommandParser(prog="python -m exits.profile",
                      description="Measure each unit's time against the rows it runs on, on this machine, and "
                                  "store the table beside the cache (CACHE/cost_tables/NAME.json).")
    p.add_argument("--checkpoint", default=None, help="head checkpoint the cache was dumped from (eager: required)")
    p.add_argument("--cache", required=True, help="the cache the table is for")
    p.add_argument("--name", required=True, type=table_name_option,
                   help="the table's name (one per target: e.g. cpu-t2-b64-eager)")
    p.add_argument("--device", type=device_option, default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=threads, default=None, help="CPU threads (torch, or onnxruntime per session)")
    p.add_argument("--batch-size", type=int_at_least(1, maximum=MAX_BATCH_SIZE), default=64,
                   help=f"largest batch profiled (default 64, at most {MAX_BATCH_SIZE})")
    p.add_argument("--runtime", choices=("eager", "onnx"), default="eager", help="ExitRuntime or a bundle's router")
    p.add_argument("--bundle", default=None, help="bundle folder (python -m exits.export_bundle); --runtime onnx")
    p.add_argument("--score", choices=("max_prob", "margin", "neg_entropy"), default="max_prob",
                   help="score kind the steps compute (default max_prob)")
    p.add_argument("--rounds", type=positive_int, default=DEFAULT_ROUNDS,
                   help=f"interleaved timing rounds (default {DEFAULT_ROUNDS})")
    p.add_argument("--min-time", type=positive_float, default=2e-3, help="seconds each timing lasts at least")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random input images")
    p.add_argument("--overwrite", action="store_true", help="replace a table of this name (announced)")
    p.add_argument("--skip-integrity-check", action="store_true", help="skip the cache's checksums and value scan")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _probes(args: argparse.Namespace, cache: Any, device: Any) -> tuple[list[Any], str | None, dict[str, Any]]:
    """(probes, backbone fingerprint, extra target fields) of the runtime asked."""
    from .errors import ExitsError

    dumped = ((cache.meta.provenance or {}).get("model") or {}).get("fingerprint")
    if args.runtime == "onnx":
        from bundle import open_bundle

        from ._profile_targets import onnx_probes

        if args.bundle is None:
            raise ExitsError("--runtime onnx needs --bundle DIR (python -m exits.export_bundle)")
        providers = ["CPUExecutionProvider"] if device.type == "cpu" else ["CUDAExecutionProvider"]
        if device.type not in ("cpu", "cuda"):
            raise ExitsError(f"--device {device}: the onnx runtime runs on cpu or cuda")
        if device.type == "cuda":
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise ExitsError(f"--device {device}: this onnxruntime has no CUDAExecutionProvider "
                                 f"(it has {onnxruntime.get_available_providers()}); pip install onnxruntime-gpu")
        router = open_bundle(args.bundle, threads=args.threads, providers=providers)
        man = router.manifest.doc
        if man["cache"]["fingerprint"] != cache.fingerprint:
            raise ExitsError(f"--bundle {args.bundle}: exported for cache {man['cache']['fingerprint'][:19]}..., not "
                             f"--cache {args.cache} ({cache.fingerprint[:19]}...)")
        extra = {"bundle": {"path": str(args.bundle), "fingerprint": man.get("fingerprint")}}
        return onnx_probes(router, args.batch_size, args.score, seed=args.seed), man["model"]["fingerprint"], extra
    from ._profile_targets import eager_probes
    from .checkpoints import model_from_checkpoint
    from .runtime import ExitRuntime

    if args.checkpoint is None:
        raise ExitsError("--runtime eager needs --checkpoint (the head checkpoint the cache was dumped from)")
    if args.bundle is not None:
        raise ExitsError("--bundle is for --runtime onnx")
    model = model_from_checkpoint(args.checkpoint)
    if dumped is not None and dumped != model.fingerprint():
        raise ExitsError(f"--checkpoint {args.checkpoint}: backbone {model.fingerprint()[:19]}..., but the cache was "
                         f"dumped from {dumped[:19]}...")
    # random probe inputs are not normalised images: the input check would refuse them
    runtime = ExitRuntime(model, None, unit_macs={u.name: u.macs for u in cache.units}, device=device,
                          check_inputs=False)
    return eager_probes(runtime, args.batch_size, args.score, seed=args.seed), model.fingerprint(), {}


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from bundle.errors import BundleError
    from data_cache import CacheError, open_cache
    from data_cache.cli_types import warn
    from data_cache.cost_tables import cost_table_path, write_cost_table
    from data_cache.outputs import OutputError, check_output_file

    from .devices import check_device
    from .errors import ExitsError

    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        device = check_device(args.device)
        cache = open_cache(args.cache, skip_integrity_check=args.skip_integrity_check)
        target = cost_table_path(cache.path, args.name)
        if target.parent.is_dir():
            check_output_file(target, overwrite=args.overwrite, option="--name")
            if target.is_file():
                warn(f"--name {target}: replacing the existing file (--overwrite)")
        if args.threads:
            torch.set_num_threads(args.threads)
        probes, model_fp, extra = _probes(args, cache, device)
        say(f"profiling {len(probes)} items ({args.runtime}, {device}, threads {args.threads or 'default'}) at batch "
            f"sizes up to {args.batch_size}, {args.rounds} rounds")
        with torch.inference_mode():
            table = profile_table(args.name, probes, cache=cache, model_fingerprint=model_fp, device=device,
                                  threads=args.threads, batch_size=args.batch_size, runtime=args.runtime,
                                  score=args.score, rounds=args.rounds, min_time=args.min_time, extra=extra,
                                  progress=say)
        path = write_cost_table(cache.path, table, overwrite=args.overwrite)
    except (BundleError, CacheError, ExitsError, OutputError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    base, b = table.of_kind("base")[0], args.batch_size
    print(f"base model: {1e3 * base.median_s[-1] / b:.4f} ms per sample at batch {b} (rounds "
          f"{1e3 * base.min_s[-1] / b:.4f}-{1e3 * base.max_s[-1] / b:.4f}), {1e3 * base.median_s[0]:.4f} ms at batch 1 "
          f"({1e3 * base.min_s[0]:.4f}-{1e3 * base.max_s[0]:.4f})")
    print(f"cost table {args.name!r} written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 with one line on bad input."""
    from data_cache.outputs import cli_entry

    return cli_entry(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
