"""The GPU check's ``time`` section (``benchmarks/device_check.py``, docs/device-check.md): the demo model profiled
on the device (``exits.profile``'s eager probes, fp32 and bf16 autocast) and the demo configuration's predicted
speed-up (``search.time_cost.TimeCostModel``) against the measured one at batch 1, 64 and 256, and re-batched at 64
and 256 (``exits.validate --rebatch``). Imports neither optuna nor pymoo."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["time_section"]


def time_section(cache: Any, x: torch.Tensor, doc: dict, how: str, runtime: Any, sizes: Any,
                 loader: Callable[..., list]) -> dict:
    """Profile the demo model (``runtime``: its one configuration, ``doc`` its export, chosen ``how``) on the
    runtime's device in fp32 and under bf16 autocast, then the predicted against the measured speed-up of the
    configuration over the holdout images ``x`` at every ``sizes.time_batch_sizes`` (``loader(x, labels,
    sample_index, batch)`` gives the validation's batches)."""
    from exits._profile_targets import eager_probes
    from exits.dump import deterministic
    from exits.measure import timing_batches
    from exits.profile import profile_table
    from exits.validate import validate
    from search.time_cost import TimeCostModel

    device = runtime.device
    labels, index = np.asarray(cache.labels("holdout")), np.asarray(cache.sample_index("holdout"))
    top = max(sizes.time_batch_sizes)
    out: dict[str, Any] = {"config": {"chosen": how, "exits": doc["configs"][0]["exits"]}, "profile_batch_size": top}
    for precision in ("fp32", "bf16"):
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        t0 = time.perf_counter()
        with deterministic(), autocast, torch.inference_mode():
            table = profile_table(f"{device.type}-{precision}", eager_probes(runtime, top, "max_prob"), cache=cache,
                                  model_fingerprint=runtime.model.fingerprint(), device=device,
                                  threads=torch.get_num_threads(), batch_size=top, runtime="eager", score="max_prob",
                                  rounds=sizes.rounds, min_time=sizes.profile_min_time,
                                  extra={"precision": precision})
        res: dict[str, Any] = {"profile_s": time.perf_counter() - t0, "loadavg": table.target.get("loadavg_before")}
        cells = [(b, False) for b in sizes.time_batch_sizes] + [(b, True) for b in sizes.time_batch_sizes if b > 1]
        for batch, rebatch in cells:   # compacted at every batch size, then re-batched (exits.validate --rebatch)
            model = TimeCostModel(table, [e.units for e in cache.exits], [e.name for e in cache.exits],
                                  batch_size=batch, rebatch=rebatch)
            n = sizes.latency_samples if batch == 1 else sizes.timing_samples
            timing = [b.to(device) for b in timing_batches(x, batch, n)]
            with deterministic(), autocast:
                report = validate(runtime, [runtime.configs[0]], loader(x, labels, index, max(batch, 64)),
                                  split="holdout", cache=cache, timing_batches=timing, latency_samples=[],
                                  rounds=sizes.rounds, time_model=model, rebatch=rebatch)
            c = report["configs"][0]
            res[f"batch_{batch}" + ("_rebatch" if rebatch else "")] = {
                "agreement": c["agreement"], "mac_estimate_speedup": c["mac_estimate_speedup"],
                **{k: c[k] for k in ("predicted_speedup", "measured_speedup", "speedup_error", "mac_speedup_error")},
                **{k: v for k, v in c["time"].items() if k.endswith("ms_per_sample")}}
        out[precision] = res
    return out
