"""Pieces shared by ``exits.validate`` and ``exits.validate_bundle``: progress, the split warning, the label check
and the report fields every validated configuration gets."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from .time_prediction import time_entry

SEARCH_SPLIT_WARNING = ("--split search: the configurations were chosen on these samples, so their measured figures "
                        "are optimistic; holdout is the independent check")


def progress_printer(quiet: bool) -> Callable[[str], None]:
    """Progress lines on stderr, or nothing with ``--quiet``."""
    return (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


def check_labels(seen: np.ndarray, labels: np.ndarray) -> None:
    """Refuse a dataset whose labels differ from the cache's on the same samples."""
    if not np.array_equal(seen, labels):
        from .data import DataError

        raise DataError("the dataset's labels differ from the cache's on the same sample_index; "
                        "is it another dataset or version?")


def config_entry(c: Any, exit_names: list[str], predicted: dict[str, Any], measured: dict[str, Any],
                 agreement: dict[str, Any], relative_cost: float) -> dict[str, Any]:
    """The report entry of configuration ``c``: its exits, predicted and measured figures, agreement with the
    cache and the MAC estimate of its speed-up (from the accounted ``relative_cost``)."""
    return {"id": c.id,
            "exits": [{"name": exit_names[e], "threshold": t} for e, t in zip(c.exits, c.thresholds, strict=True)],
            "score": c.score,
            "predicted": predicted,
            "measured": measured,
            **agreement,
            "mac_estimate_speedup": 1.0 / max(relative_cost, 1e-12)}


def speed_fields(t: dict[str, Any], mac_estimate_speedup: float) -> dict[str, Any]:
    """Throughput (batch 64) and latency (batch 1) speed-ups of ``time_against_base``'s result ``t``."""
    fields: dict[str, Any] = {}
    if "b64" in t:
        fields.update(throughput_speedup_b64=t["b64"]["speedup"], throughput_b64=t["b64"],
                      throughput_vs_mac_estimate=t["b64"]["speedup"] / mac_estimate_speedup)
    if "b1" in t:
        fields.update(latency_speedup_b1=t["b1"]["speedup_median"], latency_speedup_b1_mean=t["b1"]["speedup_mean"],
                      latency_b1=t["b1"])
    return fields


def time_fields(time_model: Any, c: Any, comparison: Any, t: dict[str, Any], predicted: dict[str, Any]) -> dict:
    """Predicted against measured speed-up of ``c`` (``exits.time_prediction``); nothing without ``time_model``."""
    if time_model is None:
        return {}
    return time_entry(time_model, c, comparison.leave(c), t.get("b64"), 1.0 / max(predicted["relative_cost"], 1e-12))
