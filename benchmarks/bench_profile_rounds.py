"""How many rounds a profile needs: the spread of the predicted speed-up over repeated profiles, and its error.

On the demo (the bundled Fashion-MNIST cache and checkpoint, a copy in a temporary folder) and its certified
configuration as ``exits.pipeline`` ships it, each repeat runs ``python -m exits.profile`` (eager, one thread,
``--batch-size 64``, as a user runs it) once per setting, the settings in alternating order, then times the
configuration against the base model as ``exits.validate`` does (``time_against_base``: 3 rounds over 4,096
Fashion-MNIST test images in full batches of 64). Per setting it reports each profile's predicted speed-up
(``TimeCostModel`` at batch 64 on the exits the cache gives the timed rows), their spread (max / min) and the error
against the measured speed-up of the same repeat, with the load average; a setting is ``ROUNDSxMIN_TIME``::

    .venv/bin/python benchmarks/bench_profile_rounds.py [--repeats 4] [--settings 5x0.002,15x0.002,5x0.02]

Writes ``benchmarks/results/profile_rounds.json`` (machine described).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._machine import save_results  # noqa: E402
from benchmarks.bench_delivery import certified_demo  # noqa: E402
from benchmarks.device_check import DEMO_CACHE, DEMO_CHECKPOINT  # noqa: E402

BATCH = 64


def _setting(text: str) -> tuple[int, float]:
    rounds, min_time = text.split("x")
    return int(rounds), float(min_time)


def _profile(cache: Path, name: str, rounds: int, min_time: float) -> float:
    """Run the command as a user does; seconds it took."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "exits.profile", "--checkpoint", str(DEMO_CHECKPOINT), "--cache", str(cache),
                    "--name", name, "--threads", "1", "--batch-size", str(BATCH), "--rounds", str(rounds),
                    "--min-time", str(min_time), "--quiet"], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--settings", default="5x0.002,15x0.002,5x0.02", help="ROUNDSxMIN_TIME, comma-separated")
    args = p.parse_args(argv)
    settings = [_setting(s) for s in args.settings.split(",")]

    import numpy as np
    import torch

    from data_cache import open_cache
    from exits.measure import time_against_base, timing_batches
    from exits.runtime import ExitRuntime
    from search import ExitProblem
    from search.time_cost import TimeCostModel

    torch.set_num_threads(1)
    _, model, x, config, relative_macs, doc = certified_demo()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp) / "cache"
        shutil.copytree(DEMO_CACHE, cache_dir)
        cache = open_cache(cache_dir)
        rt = ExitRuntime(model, doc, cache=cache, check_inputs=False)
        inputs = timing_batches(x, BATCH, 4096)
        leave = ExitProblem(cache, "holdout").assign(config)
        timed = np.arange(len(inputs) * BATCH) % len(x)   # the rows timing_batches took
        for r in range(args.repeats):
            order = settings if r % 2 == 0 else settings[::-1]
            load = os.getloadavg()[0]
            predicted = {}
            for rounds, min_time in order:
                name = f"r{rounds}-m{min_time}-{r}"
                seconds = _profile(cache_dir, name, rounds, min_time)
                tm = TimeCostModel.from_cache(open_cache(cache_dir), name, batch_size=BATCH)
                est = tm.estimate(config.exits, leave[timed], config.rule_names)
                predicted[f"{rounds}x{min_time}"] = {"speedup": est.speedup, "profile_s": seconds,
                                                     "base_ms_per_sample": 1e3 * est.base_time_per_sample_s}
            with torch.inference_mode():
                t = time_against_base(rt.base_forward, lambda b: rt.run(b, rt.configs[0]), inputs, [], 3,
                                      torch.device("cpu"))["b64"]
            rows.append({"repeat": r, "load_before": load, "load_after": os.getloadavg()[0],
                         "measured_speedup": t["speedup"], "predicted": predicted})
            print(f"repeat {r}: measured {t['speedup']:.3f}; predicted "
                  + ", ".join(f"{k} {v['speedup']:.3f}" for k, v in predicted.items()), flush=True)
    summary = {}
    for rounds, min_time in settings:
        key = f"{rounds}x{min_time}"
        pred = [row["predicted"][key]["speedup"] for row in rows]
        err = [row["predicted"][key]["speedup"] / row["measured_speedup"] - 1 for row in rows]
        summary[key] = {"predicted": pred, "spread": max(pred) / min(pred), "errors": err,
                        "max_abs_error": max(abs(e) for e in err), "within_10pct": sum(abs(e) <= 0.1 for e in err),
                        "median_profile_s": statistics.median(row["predicted"][key]["profile_s"] for row in rows)}
        print(f"{key}: predicted {min(pred):.3f}-{max(pred):.3f} (spread x{max(pred) / min(pred):.3f}), errors "
              + " ".join(f"{e:+.1%}" for e in err) + f", profile {summary[key]['median_profile_s']:.0f} s")
    path = save_results("profile_rounds", {"relative_macs": relative_macs, "batch_size": BATCH, "threads": 1,
                                           "summary": summary, "rows": rows})
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
