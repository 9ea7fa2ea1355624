"""Coverage of timm's zoo: exits after every block of one small representative per ``timm.list_modules()`` module.

Per module: the smallest registered model (fewest parameters, counted on the meta device), random init,
10 classes, at the smallest of 64/96/128/160/224 px the model accepts (``img_size=`` where it takes one),
else its default size. Then:

- ``exits.check.check_model``: ``attach_exits(model, points="blocks", heads="linear")``, timed (the
  registered plan or the generic plan, with the exactness probe: the steps in order must equal
  ``model(x)`` bit for bit); on another random batch, segments in order == ``model(x)``
  (``torch.equal``); compaction (drop a row at the boundary whose state carries the most values, run
  on, compare with the full batch's rows); MACs of every unit, summing to the whole model's count;
- a short dump (4 + 4 images, batch 2) into a temporary cache; its final exit must predict as the model;
- for a module with a per-class plan, the generic plan too (traced, probed, exact or not).

Eligible modules (the issue's denominator): the representative fx-traces whole with timm's own leaf
modules and functions, or has ``forward_intermediates``. Writes ``benchmarks/results/coverage.json`` and
the table ``docs/coverage.md``::

    PYTHONPATH=. python benchmarks/bench_coverage.py [--modules resnet,vit] [--threads 1] [--table-only]
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import describe_machine, save_results  # noqa: E402
from data_cache.cli_types import threads  # noqa: E402
from data_cache.outputs import write_text_atomic  # noqa: E402
from exits import attach_exits  # noqa: E402
from exits.check import check_model  # noqa: E402
from exits.data import TensorDataset  # noqa: E402
from exits.dump import dump_cache  # noqa: E402
from exits.errors import ExitsError  # noqa: E402
from exits.generic_plan import generic_plan, trace_with_leaves  # noqa: E402
from exits.model import default_input_size  # noqa: E402
from exits.probe import probe_plan  # noqa: E402
from exits.segments import registered_plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "coverage.md"
SIZES = (64, 96, 128, 160, 224)
NUM_CLASSES = 10
TIMEOUT_S = 300
ATTACH_LIMIT_S, ATTACH_PARAMS, ATTACH_RUNS = 5.0, 30e6, 3


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: int):
    def on_alarm(signum, frame):
        raise _Timeout(f"took over {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, ExitsError) else f"{type(exc).__name__}: {text}"[:300]


def _n_params(name: str) -> int | None:
    import timm

    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = timm.create_model(name, pretrained=False)
            return sum(p.numel() for p in model.parameters())
        except Exception:  # a model that cannot be built on the meta device: count on the CPU
            continue
    return None


def pick_representative(module: str) -> tuple[str, int] | None:
    """The model of ``module`` with the fewest parameters (name order breaks ties)."""
    import timm

    counted = [(n, name) for name in timm.list_models(module=module) if (n := _n_params(name)) is not None]
    return (min(counted)[1], min(counted)[0]) if counted else None


def build_at_small_size(name: str) -> tuple[torch.nn.Module, tuple[int, int, int], list[str]]:
    """The model at the smallest accepted size of ``SIZES`` (else its default), random init, eval mode."""
    import timm

    tried = []
    for size in SIZES:
        for kwargs in ({"img_size": size}, {}):
            try:
                torch.manual_seed(0)
                model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs).eval()
                with torch.no_grad():
                    out = model(torch.randn(1, 3, size, size))
                if isinstance(out, torch.Tensor) and out.shape == (1, NUM_CLASSES):
                    return model, (3, size, size), tried
            except Exception as exc:  # this size (or img_size=) is refused: try the next
                tried.append(f"{size}{' img_size' if kwargs else ''}: {_one_line(exc)[:80]}")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES).eval()
    return model, default_input_size(model), tried


def fx_traces(model: torch.nn.Module) -> bool:
    """Whether the whole model traces with torch.fx and timm's own leaf modules and functions."""
    try:
        trace_with_leaves(model)
        return True
    except ExitsError:
        return False


def check_dump(model, input_size) -> bool:
    """A 4 + 4 image dump (batch 2): its final exit holds the model's top-1 probability, and its class
    wherever the top two are apart (random heads often tie)."""
    g = torch.Generator().manual_seed(3)
    images = torch.randn(4, *input_size, generator=g)
    ds = TensorDataset(images, torch.zeros(4, dtype=torch.int64))
    with tempfile.TemporaryDirectory() as tmp:
        cache = dump_cache(model, {"search": ds, "holdout": ds}, Path(tmp) / "cache", k=1, batch_size=2)
        with torch.no_grad():
            top = torch.softmax(model.backbone(images).float(), 1).topk(2)
        final = len(cache.exits) - 1
        ids = np.asarray(cache.topk_ids("holdout"))[final, 0, :]
        probs = np.asarray(cache.topk_probs("holdout"))[final, 0, :]
        apart = (top.values[:, 0] - top.values[:, 1] > 1e-5).numpy()
        return bool(np.allclose(probs, top.values[:, 0].numpy(), rtol=1e-5, atol=1e-7)
                    and np.array_equal(ids[apart], top.indices[apart, 0].numpy()))


def _attach_times(model: torch.nn.Module, size, runs: int, first: float | None = None) -> dict:
    """Seconds to attach exits after every block (with the probe), ``runs`` times: the first (one-time costs
    included) and the median (the machine is shared: single timings jump)."""
    times = [] if first is None else [first]
    while len(times) < runs:
        t0 = time.perf_counter()
        attach_exits(model, points="blocks", heads="linear", input_size=size)
        times.append(time.perf_counter() - t0)
    return {"first_s": times[0], "median_s": float(np.median(times)), "runs": len(times)}


def attach_at_default_size(name: str) -> dict:
    """Attach times at the model's default input size."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES).eval()
    size = default_input_size(model)
    try:
        return {"input": size[1], **_attach_times(model, size, ATTACH_RUNS)}
    except Exception as exc:  # reported, not fatal
        return {"input": size[1], "error": _one_line(exc)}


def check_generic(model: torch.nn.Module, input_size, name: str) -> str:
    """For a model with a per-class plan: does the generic plan cut it exactly too?"""
    try:
        plan = generic_plan(model, name=name)
        probe_plan(model, plan, input_size, name=name)
        return f"exact ({sum(s.kind == 'block' for s in plan.steps)} blocks)"
    except Exception as exc:  # reported, not fatal
        return _one_line(exc)


def check_module(module: str, name: str, n_params: int) -> dict:
    row = {"module": module, "model": name, "params_m": n_params / 1e6}
    model, input_size, tried = build_at_small_size(name)
    row.update(input_size=list(input_size), sizes_refused=tried,
               forward_intermediates=hasattr(model, "forward_intermediates"), fx_traces=fx_traces(model))
    row["eligible"] = row["forward_intermediates"] or row["fx_traces"]
    plan = registered_plan(model)
    row["plan"] = plan.family if plan is not None else "generic"
    try:
        em, report = check_model(model, input_size=input_size)
    except Exception as exc:  # the reason goes in the table
        row.update(supported=False, reason=_one_line(exc))
        return row
    row.update(attach=_attach_times(model, input_size, ATTACH_RUNS, first=report.attach_s),
               bit_identical=report.bit_identical, positions=len(report.points),
               layouts=sorted({p["layout"] for p in report.points}), compaction_ok=report.compaction_ok,
               stateful_boundaries=sum(not s.out_spec.is_tensor for s in em.segments[:-1]),
               max_state_leaves=max([len(s.out_spec.leaves or ()) for s in em.segments[:-1]] or [0]),
               gmacs=report.gmacs, macs_sum_ok=report.macs_sum_ok)
    row["dump_ok"] = check_dump(em, input_size)
    if n_params <= ATTACH_PARAMS:
        row["attach_default"] = attach_at_default_size(name)
    if plan is not None:
        row["generic_plan"] = check_generic(model, input_size, name)
    checks = ("bit_identical", "compaction_ok", "macs_sum_ok", "dump_ok")
    row["supported"] = row["positions"] > 0 and all(row[c] for c in checks)
    if not row["supported"]:
        row["reason"] = ("failed: " + ", ".join(c for c in checks if not row[c]) if row["positions"]
                         else "no exit positions")
    return row


def _result(r: dict) -> str:
    if r.get("supported"):
        state = f", {r['stateful_boundaries']} carry more than the stream" if r.get("stateful_boundaries") else ""
        return f"yes: {r['positions']} positions ({'/'.join(r['layouts'])}{state})"
    return "no: " + r.get("reason", "?").replace("|", "/")


def _default_line(d: dict) -> str:
    if not d["slowest"]:
        return "- attach at the models' default input sizes: not measured"
    s = d["slowest"]
    return (f"- attach at each model's default input size (the {d['n']} representatives up to 30M parameters, "
            f"median of {ATTACH_RUNS}): slowest {s['median_s']:.2f} s ({s['model']} at {s['input']} px); over "
            f"{ATTACH_LIMIT_S:.0f} s: "
            f"{', '.join(d['over_limit']) or 'none'}")


def write_table(rows: list[dict], summary: dict, path: Path) -> None:
    lines = [
        "# Coverage of timm's modules", "",
        "Regenerated by `PYTHONPATH=. python benchmarks/bench_coverage.py` (figures in "
        "`benchmarks/results/coverage.json`). One representative per `timm.list_modules()` module: the model "
        "with the fewest parameters, random init, 10 classes, at the smallest of 64/96/128/160/224 px it "
        "accepts (else its default size), one torch thread. *Supported* means: "
        "`attach_exits(model, points=\"blocks\", heads=\"linear\")` succeeds "
        "with the exactness probe, the segments in order equal `model(x)` bit for bit on another batch, "
        "dropping a row mid-way leaves the other rows' logits unchanged, the units' MACs sum to the model's, "
        "and a short dump predicts as the model at its final exit. *Eligible*: the representative fx-traces "
        "whole (timm's leaf modules) or has `forward_intermediates`.", "",
        f"- timm {summary['timm']}, torch {summary['torch']}; {summary['date']}; load average "
        f"{summary['loadavg']} at the start, {summary['loadavg_at_end']} at the end (2 cores, shared: times are "
        "noisy)",
        f"- supported: **{summary['supported']} of {summary['modules']}** modules "
        f"({100 * summary['fraction_all']:.1f}%); of the {summary['eligible']} eligible: "
        f"**{summary['supported_eligible']}** ({100 * summary['fraction_eligible']:.1f}%)",
        f"- attach (with the probe; per model the median of {ATTACH_RUNS} runs), models up to 30M parameters, at "
        f"the input size tried: median "
        f"{summary['median_attach_s']:.2f} s, slowest {summary['slowest_attach_s']:.2f} s "
        f"({summary['slowest_attach_model']}); over {ATTACH_LIMIT_S:.0f} s: "
        f"{', '.join(summary['attach_over_limit']) or 'none'}",
        _default_line(summary["attach_default_size"]), "",
        "Not supported, with the reason:", "",
        *[f"- `{m}`: {reason}" for m, reason in summary["not_supported"].items()], "",
        "| module | model tried | params (M) | input | eligible | plan | GMACs | attach (s) | attach at default size | "
        "supported |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = f"{r['input_size'][1]}" if r.get("input_size") else "-"
        gmacs = f"{r['gmacs']:.3f}" if "gmacs" in r else "-"
        attach = f"{r['attach']['median_s']:.2f} (first {r['attach']['first_s']:.2f})" if "attach" in r else "-"
        plan = r.get("plan", "-")
        if "generic_plan" in r:
            plan += f" (generic: {r['generic_plan'].replace('|', '/')[:60]})"
        d = r.get("attach_default") or {}
        default = (f"{d['median_s']:.2f} s at {d['input']} px" if "median_s" in d else
                   f"failed at {d['input']} px" if d else "-")
        lines.append(f"| {r['module']} | {r['model']} | {r['params_m']:.1f} | {size} | "
                     f"{'yes' if r.get('eligible') else 'no'} | {plan} | {gmacs} | {attach} | {default} | "
                     f"{_result(r)} |")
    write_text_atomic(path, "\n".join(lines) + "\n", overwrite=True)


def _slowest_default(rows: list[dict]) -> dict:
    timed = [r for r in rows if "median_s" in (r.get("attach_default") or {})]
    slowest = max(timed, key=lambda r: r["attach_default"]["median_s"], default=None)
    over = [f"{r['model']} ({r['attach_default']['median_s']:.1f} s at {r['attach_default']['input']} px)"
            for r in timed if r["attach_default"]["median_s"] > ATTACH_LIMIT_S]
    return {"n": len(timed), "over_limit": over,
            "slowest": None if slowest is None else {"model": slowest["model"], **slowest["attach_default"]}}


def summarize(rows: list[dict], machine: dict) -> dict:
    import timm

    eligible = [r for r in rows if r.get("eligible")]
    small = [r for r in rows if "attach" in r and r["params_m"] * 1e6 <= ATTACH_PARAMS]
    slowest = max(small, key=lambda r: r["attach"]["median_s"], default=None)
    times = sorted(r["attach"]["median_s"] for r in small)
    return {
        "timm": timm.__version__, "torch": torch.__version__, "date": machine["date"],
        "median_attach_s": times[len(times) // 2] if times else 0.0,
        "loadavg": " ".join(machine.get("loadavg_at_start", [])),
        "modules": len(rows), "supported": sum(bool(r.get("supported")) for r in rows),
        "eligible": len(eligible), "supported_eligible": sum(bool(r.get("supported")) for r in eligible),
        "fraction_all": sum(bool(r.get("supported")) for r in rows) / max(len(rows), 1),
        "fraction_eligible": sum(bool(r.get("supported")) for r in eligible) / max(len(eligible), 1),
        "slowest_attach_s": slowest["attach"]["median_s"] if slowest else 0.0,
        "slowest_attach_model": f"{slowest['model']} at {slowest['input_size'][1]} px" if slowest else "-",
        "attach_over_limit": [r["model"] for r in small if r["attach"]["median_s"] > ATTACH_LIMIT_S],
        "attach_default_size": _slowest_default(rows),
        "not_supported": {r["module"]: r.get("reason", "") for r in rows if not r.get("supported")},
    }


def main(argv: list[str] | None = None) -> int:
    import timm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", default=None, help="comma-separated timm modules (default: all)")
    parser.add_argument("--threads", type=threads, default=1,
                        help="torch threads (default 1: on a shared 2-core machine a second thread mostly waits "
                             "for a core, and single ops then take a scheduler tick)")
    parser.add_argument("--no-table", action="store_true", help="do not rewrite docs/coverage.md")
    parser.add_argument("--table-only", action="store_true",
                        help="only rewrite docs/coverage.md from benchmarks/results/coverage.json")
    args = parser.parse_args(argv)
    if args.table_only:
        import json

        from benchmarks._machine import RESULTS

        path = RESULTS / "coverage.json"
        saved = json.loads(path.read_text())
        old = saved["summary"]
        saved["summary"] = dict(summarize(saved["modules"], {"date": old["date"],
                                                              "loadavg_at_start": old["loadavg"].split()}),
                                loadavg_at_end=old.get("loadavg_at_end", "?"))
        write_text_atomic(path, json.dumps(saved, indent=1, default=float) + "\n", overwrite=True)
        write_table(saved["modules"], saved["summary"], TABLE)
        print(f"rewrote {TABLE} and the summary in {path}")
        return 0
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    modules = args.modules.split(",") if args.modules else timm.list_modules()
    machine = describe_machine()  # the load average as the sweep starts
    rows = []
    for module in modules:
        t0 = time.perf_counter()
        pick = pick_representative(module)
        if pick is None:
            rows.append({"module": module, "model": "-", "params_m": 0.0, "supported": False,
                         "reason": "no model of this module can be built"})
            continue
        try:
            with _time_limit(TIMEOUT_S):
                row = check_module(module, *pick)
        except Exception as exc:  # a model that breaks the sweep itself is a row, not a crash
            row = {"module": module, "model": pick[0], "params_m": pick[1] / 1e6, "supported": False,
                   "reason": _one_line(exc)}
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{module:28s} {row['model']:34s} {_result(row)[:110]}", flush=True)
    summary = summarize(rows, machine)
    with open("/proc/loadavg") as f:
        summary["loadavg_at_end"] = " ".join(f.read().split()[:3])
    path = save_results("coverage" if not args.modules else "coverage_subset",
                        {"software": {"torch": torch.__version__, "timm": timm.__version__}, "threads": args.threads,
                         "summary": summary, "modules": rows})
    if not args.no_table and not args.modules:
        write_table(rows, summary, TABLE)
    print(f"supported {summary['supported']}/{summary['modules']} modules ({100 * summary['fraction_all']:.1f}%); "
          f"eligible {summary['supported_eligible']}/{summary['eligible']} "
          f"({100 * summary['fraction_eligible']:.1f}%); "
          f"slowest attach (<= 30M params) {summary['slowest_attach_s']:.2f} s ({summary['slowest_attach_model']})")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
