"""The figure of an ``exitvalidation/1`` report (``exits.validate``): predicted against measured accuracy, and the
measured speed-up against the MAC estimate."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .time_prediction import plot_time_prediction

_SPEEDUP_TICKS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 1, 1.2, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100)  # log axis labels
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
    """Write each configuration's id beside its (finite) point."""
    for x, y, cid in zip(xs, ys, ids, strict=True):
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
    ticks = [t for t in _SPEEDUP_TICKS if lo <= t <= hi]
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

