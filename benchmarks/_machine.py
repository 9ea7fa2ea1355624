"""Describe the machine a benchmark ran on, time cases in interleaved rounds, and save figures under
benchmarks/results/."""
from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Mapping
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def describe_machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    info = {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        with open("/proc/loadavg") as f:
            info["loadavg_at_start"] = f.read().split()[:3]
    except OSError:
        pass
    return info


def save_results(name: str, figures: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": describe_machine(), **figures}, indent=1, default=float) + "\n")
    return path


def interleaved_rounds(runs: Mapping[str, Callable[[], object]], rounds: int, per: int = 1
                       ) -> tuple[dict[str, list[float]], list[float]]:
    """Seconds per item (``per`` items a call) of each case over ``rounds`` rounds, the cases in one order in even
    rounds and reversed in odd ones; and the one-minute load average before and after."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    load = [os.getloadavg()[0]]
    for r in range(rounds):
        for k in list(runs)[:: 1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            runs[k]()
            times[k].append((time.perf_counter() - t0) / per)
    load.append(os.getloadavg()[0])
    return times, load
