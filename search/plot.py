"""Figures from Fronts and configurations. matplotlib is imported lazily; nothing global is touched.

Every function draws on a new ``matplotlib.figure.Figure`` (no pyplot, so no backend is switched and
no figure is left open) or on a given ``ax``, returns the Figure, and saves it only when ``path`` is given.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._validation import SearchError, checked
from .front import Front

__all__ = ["plot_fronts", "plot_exit_distribution", "plot_hv_history"]


def _axes(ax, figsize=(6.0, 4.5)):
    """``(figure, axes)``: the given axes, or a new Figure with one axes."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SearchError("plots need matplotlib: pip install matplotlib") from None
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _finish(fig, path) -> None:
    if path is not None:
        path = Path(path)
        if not path.parent.is_dir():
            raise SearchError(f"cannot save the plot to {str(path)!r}: folder {str(path.parent)!r} does not exist")
        fig.savefig(path, dpi=150)


def _check_point(value, name: str):
    if value is None:
        return None
    try:
        acc, cost = (float(v) for v in value)
    except (TypeError, ValueError):
        raise SearchError(f"`{name}` must be (accuracy, relative_cost); got {value!r}") from None
    return acc, cost


def plot_fronts(fronts_by_method: dict[str, Front], *, base=None, oracle=None, title: str = "",
                ax=None, path=None):
    """Accuracy (%) against relative cost, one line with markers per method, cheapest first.

    ``base`` and ``oracle`` are ``(accuracy, relative_cost)`` points (fractions), marked when given;
    pass ``ax`` to draw into an existing axes (e.g. search and holdout side by side).
    """
    if not isinstance(fronts_by_method, dict) or not all(isinstance(f, Front) for f in fronts_by_method.values()):
        raise SearchError("`fronts_by_method` must be a dict of method name -> Front")
    base, oracle = _check_point(base, "base"), _check_point(oracle, "oracle")
    fig, ax = _axes(ax)
    for method, front in fronts_by_method.items():
        order = np.argsort(front.relative_cost, kind="stable")
        ax.plot(front.relative_cost[order], 100.0 * front.accuracy[order], marker="o", markersize=3,
                linewidth=1.2, label=f"{method} ({len(front)})")
    if base is not None:
        ax.scatter([base[1]], [100.0 * base[0]], marker="*", s=140, color="black", zorder=5, label="base model")
        ax.axhline(100.0 * base[0], color="black", linewidth=0.6, linestyle=":")
    if oracle is not None:
        ax.scatter([oracle[1]], [100.0 * oracle[0]], marker="^", s=70, color="grey", zorder=5,
                   label="oracle (unreachable)")
    ax.set_xlabel("relative cost (base model = 1)")
    ax.set_ylabel("top-1 accuracy (%)")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    _finish(fig, path)
    return fig


def plot_exit_distribution(problem, config, *, ax=None, path=None):
    """Bar chart of the fraction of samples leaving at each enabled exit and the final one,
    each bar labelled with the accuracy of the samples that left there. ``problem``: an ExitProblem
    or a SplitEvaluator of the split."""
    checked(config, problem.cache)
    counts, right = problem.exit_outcomes(config)
    exits = list(config.exits) + [len(problem.cache.exits) - 1]
    names = [problem.cache.exits[e].name for e in exits]
    frac = (counts / problem.n_samples).tolist()
    acc = (right / np.maximum(1, counts)).tolist()
    fig, ax = _axes(ax, figsize=(max(4.0, 0.6 * len(exits) + 2.0), 4.0))
    x = np.arange(len(exits))
    bars = ax.bar(x, frac, color="tab:blue")
    for b, f, a in zip(bars, frac, acc):
        if f > 0:
            ax.annotate(f"{100 * a:.1f}%", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                        va="bottom", fontsize="x-small")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize="x-small")
    ax.set_ylabel("fraction of samples leaving")
    ax.set_ylim(0, max(frac) * 1.15 + 1e-9)
    ax.set_title(f"exit distribution on {problem.split!r} (labels: accuracy there)", fontsize="small")
    _finish(fig, path)
    return fig


def plot_hv_history(histories: dict[str, list[tuple[int, float]]], *, ax=None, path=None):
    """Hypervolume against evaluations, one step line per method (``(evals, hv)`` pairs)."""
    if not isinstance(histories, dict):
        raise SearchError("`histories` must be a dict of method name -> list of (evaluations, hypervolume)")
    fig, ax = _axes(ax)
    for method, hist in histories.items():
        try:
            arr = np.asarray(hist, dtype=np.float64).reshape(len(hist), -1) if len(hist) else np.zeros((0, 2))
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.shape[1] != 2:
            raise SearchError(f"history of {method!r} must be a list of (evaluations, hypervolume) pairs")
        ax.step(arr[:, 0], arr[:, 1], where="post", marker=".", label=method)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume (ref. point (1, 1))")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    _finish(fig, path)
    return fig
