"""The command line as a user meets it: start-up time, and Optuna's default sampler at 20,000 trials.

1. ``python -m search.pareto --help``: wall time of the whole process, best and median of 10 runs,
   next to ``python -c pass`` and ``python -c "import numpy"`` measured the same way (what any
   command costs here), with the load average.
2. ``python -m search.pareto CACHE_A --methods dp,optuna --evaluations 20000`` with the default sampler
   (NSGA-II) on the 12-position benchmark cache (cache A of bench_search.py: 50k samples, 25k in the
   search split, 12 positions x 2 head types, written to a temporary folder): that it finishes, its
   time, and the ratio of its search-split hypervolume to dp's, read from the printed table.

3. ``--side-by-side REF``: ``python -m search.pareto --max-drop 0.5`` on the bundled cache, the code of git
   ``REF`` (e.g. ``main``, extracted to a temporary folder) against this tree, in interleaved rounds (the
   order alternating), whole-process wall times, medians and the ratio new / old, with the load average
   before and after; saved as cli_side_by_side.json.

Usage: python benchmarks/bench_cli.py [--evaluations N]; figures go to benchmarks/results/cli.json.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._machine import save_results  # noqa: E402
from data_cache.cli_types import positive_int  # noqa: E402
from data_cache.synthetic import write_synthetic_cache  # noqa: E402

CACHE_A = dict(n_samples=50_000, n_positions=12, n_head_types=2, seed=1)
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _wall(cmd: list[str], repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=ENV, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return {"best_s": min(times), "median_s": statistics.median(times), "all_s": times}


def start_up(repeats: int = 10) -> dict:
    py = sys.executable
    return {"help": _wall([py, "-m", "search.pareto", "--help"], repeats),
            "python_pass": _wall([py, "-c", "pass"], repeats),
            "python_import_numpy": _wall([py, "-c", "import numpy"], repeats)}


def _rows(table: str) -> dict[str, list[str]]:
    lines = table.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("method"))
    rows = {}
    for ln in lines[head + 1:]:
        if not ln.strip() or ln.startswith("HV:"):
            break
        cells = ln.split()
        rows[cells[0]] = cells
    return rows


def optuna_default(evaluations: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache_a"
        write_synthetic_cache(cache, **CACHE_A)
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "search.pareto", str(cache), "--methods", "dp,optuna",
                              "--evaluations", str(evaluations), "--no-progress"], env=ENV, capture_output=True,
                             text=True)
        wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"search.pareto failed: {run.stderr}")
    rows = _rows(run.stdout)
    hv_dp, hv_optuna = float(rows["dp"][2]), float(rows["optuna"][2])
    return {"evaluations": evaluations, "finished": True, "wall_s_whole_command": wall,
            "optuna_seconds": float(rows["optuna"][-1]), "optuna_evals": int(rows["optuna"][-2]),
            "hv_search_dp": hv_dp, "hv_search_optuna": hv_optuna, "hv_ratio": hv_optuna / hv_dp,
            "stderr": run.stderr, "table": run.stdout}


def _old_tree(ref: str, folder: Path) -> Path:
    """The Python packages of git ``ref`` (not the bundled cache: both runs read this tree's) in ``folder``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "search", "data_cache",
                              ":(exclude)data_cache/bundled"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far (less sensitive to other load)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def side_by_side(ref: str, rounds: int) -> dict:
    """Old (``ref``) and new code on the same command, interleaved; the bundled cache named explicitly."""
    from data_cache.bundled import bundled_cache_path

    cache = bundled_cache_path()
    if cache is None:
        raise SystemExit("no bundled cache to time on")
    cmd = [sys.executable, "-m", "search.pareto", str(cache), "--max-drop", "0.5", "--no-progress"]
    load = {"before": Path("/proc/loadavg").read_text().split()[:3]}
    times: dict[str, list[float]] = {"old": [], "new": []}
    cpu: dict[str, list[float]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"old": _old_tree(ref, Path(tmp)), "new": ROOT}
        outputs = {}
        for r in range(rounds):
            for label in (("old", "new") if r % 2 == 0 else ("new", "old")):
                env = dict(os.environ, PYTHONPATH=str(trees[label]))
                t0, c0 = time.perf_counter(), _children_cpu()
                run = subprocess.run(cmd, env=env, cwd=trees[label], check=True, capture_output=True, text=True)
                times[label].append(time.perf_counter() - t0)
                cpu[label].append(_children_cpu() - c0)
                outputs[label] = _rows(run.stdout)
    load["after"] = Path("/proc/loadavg").read_text().split()[:3]
    same = {m: row[:-1] for m, row in outputs["old"].items()} == {m: row[:-1] for m, row in outputs["new"].items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    return {"command": " ".join(["python -m search.pareto", "BUNDLED_CACHE", *cmd[4:]]), "old_ref": ref,
            "rounds": rounds, "wall_s": times, "median_s": med, "ratio_new_over_old": med["new"] / med["old"],
            "cpu_s": cpu, "median_cpu_s": med_cpu, "cpu_ratio_new_over_old": med_cpu["new"] / med_cpu["old"],
            "same_table_apart_from_seconds": same, "loadavg": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluations", type=positive_int, default=20_000, help="optuna trials (default %(default)s)")
    ap.add_argument("--start-up-only", action="store_true",
                    help="time the start-up alone (saved as cli_start_up.json; cli.json keeps the optuna run)")
    ap.add_argument("--side-by-side", metavar="REF",
                    help="time --max-drop 0.5 on the bundled cache: git REF against this tree")
    ap.add_argument("--rounds", type=positive_int, default=7, help="interleaved rounds of --side-by-side (default 7)")
    args = ap.parse_args()
    if args.side_by_side:
        f = side_by_side(args.side_by_side, args.rounds)
        print(f"--max-drop 0.5 on the bundled cache: median old ({f['old_ref']}) {f['median_s']['old']:.3f} s, new "
              f"{f['median_s']['new']:.3f} s, new/old {f['ratio_new_over_old']:.3f} "
              f"(CPU: old {f['median_cpu_s']['old']:.3f} s, "
              f"new {f['median_cpu_s']['new']:.3f} s, new/old {f['cpu_ratio_new_over_old']:.3f}) "
              f"over {f['rounds']} interleaved "
              f"rounds; load {f['loadavg']['before']} -> {f['loadavg']['after']}; same table: "
              f"{f['same_table_apart_from_seconds']}")
        print("saved", save_results("cli_side_by_side", f))
        return
    figures = {"start_up": start_up()}
    s = figures["start_up"]
    print(f"--help: best {s['help']['best_s']:.3f} s, median {s['help']['median_s']:.3f} s (python -c pass "
          f"{s['python_pass']['best_s']:.3f} s, import numpy {s['python_import_numpy']['best_s']:.3f} s)", flush=True)
    if args.start_up_only:
        figures["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        print("saved", save_results("cli_start_up", figures))
        return
    figures["optuna_default_sampler"] = o = optuna_default(args.evaluations)
    print(o["table"])
    print(f"optuna (default sampler) {o['optuna_evals']} evaluations in {o['optuna_seconds']:.0f} s: "
          f"{o['hv_ratio']:.4f} of dp's search-split hypervolume")
    figures["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    print("saved", save_results("cli", figures))


if __name__ == "__main__":
    main()
