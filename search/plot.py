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
            raise SearchError(
                f"cannot save the plot to {str(path)!r}: folder {str(path.parent)!r} does not exist"
            )
        fig.savefig(path, dpi=150)


def _check_point(value, name: str):
    if value is None:
        return None
    try:
        acc, cost = (float(v) for v in value)
    except (TypeError, ValueError):
        raise SearchError(f"`{name}` must be (accuracy, relative_cost); got {value!r}") from None
    return acc, cost


def _check_marks(chosen) -> dict[str, tuple[float, float]]:
    if chosen is None:
        return {}
    if not isinstance(chosen, dict):
        raise SearchError("`chosen` must be a dict of label -> (accuracy, relative_cost)")
    return {
        str(label): _check_point(point, f"chosen[{label!r}]") for label, point in chosen.items()
    }


MARK_STYLES = (("D", "tab:red"), ("s", "tab:purple"), ("P", "tab:brown"))


def plot_fronts(
    fronts_by_method: dict[str, Front],
    *,
    base=None,
    oracle=None,
    chosen=None,
    asked_drop=None,
    focus_drop=None,
    title: str = "",
    ax=None,
    path=None,
):
    """Accuracy (%) against relative cost, one line with markers per method, cheapest first.

    ``base`` and ``oracle`` are ``(accuracy, relative_cost)`` points (fractions), marked when given;
    ``chosen`` maps a label (e.g. "chosen: within 0.5 points, certified") to the ``(accuracy, relative_cost)``
    of a configuration a query chose, each marked and labelled; ``asked_drop`` (points, needs ``base``) draws
    the line base minus the asked drop. The accuracy axis covers the fronts, the base, the marks and that line
    (never less than ``MIN_SPAN`` points); with ``focus_drop`` (points, needs ``base``) only the fronts' part
    within that drop of the base (and the marks), a note at the bottom edge saying how far the fronts go on.
    An oracle above the axis is marked at its top edge with its accuracy, not stretching it. Pass ``ax`` to
    draw into an existing axes (e.g. search and holdout side by side).
    """
    if not isinstance(fronts_by_method, dict) or not all(
        isinstance(f, Front) for f in fronts_by_method.values()
    ):
        raise SearchError("`fronts_by_method` must be a dict of method name -> Front")
    base, oracle, marks = (
        _check_point(base, "base"),
        _check_point(oracle, "oracle"),
        _check_marks(chosen),
    )
    for name, drop in (("asked_drop", asked_drop), ("focus_drop", focus_drop)):
        if drop is not None and (base is None or not np.isfinite(drop) or drop < 0):
            raise SearchError(
                f"`{name}` must be a drop in points >= 0 with `base` given; got {drop!r}"
            )
    fig, ax = _axes(ax)
    cut = -np.inf if focus_drop is None else 100.0 * base[0] - focus_drop
    shown = _draw_fronts(ax, fronts_by_method, cut)
    shown += _draw_base(ax, base, asked_drop)
    shown += _draw_marks(ax, marks)
    lo, hi = _focus(shown)
    ax.set_ylim(lo, hi)
    _note_below(ax, fronts_by_method, lo)
    if oracle is not None:
        _draw_oracle(ax, oracle, hi)
    ax.set_xlabel("relative cost (base model = 1)")
    ax.set_ylabel("top-1 accuracy (%)")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    _finish(fig, path)
    return fig


def _draw_fronts(ax, fronts_by_method: dict[str, Front], cut: float) -> list[float]:
    """One line per method, cheapest first; the accuracies (%) the axis must show (those below ``cut``
    as ``cut``)."""
    shown: list[float] = []
    for method, front in fronts_by_method.items():
        order = np.argsort(front.relative_cost, kind="stable")
        ax.plot(
            front.relative_cost[order],
            100.0 * front.accuracy[order],
            marker="o",
            markersize=3,
            linewidth=1.2,
            label=f"{method} ({len(front)})",
        )
        acc = (100.0 * front.accuracy).tolist()
        shown += [a for a in acc if a >= cut] + ([cut] if any(a < cut for a in acc) else [])
    return shown


def _draw_base(ax, base, asked_drop) -> list[float]:
    """The base model's point and level, and the line base minus the asked drop; their accuracies (%)."""
    shown: list[float] = []
    if base is not None:
        ax.scatter(
            [base[1]],
            [100.0 * base[0]],
            marker="*",
            s=140,
            color="black",
            zorder=5,
            label="base model",
        )
        ax.axhline(100.0 * base[0], color="black", linewidth=0.6, linestyle=":")
        shown.append(100.0 * base[0])
    if asked_drop is not None:
        floor = 100.0 * base[0] - asked_drop
        ax.axhline(
            floor,
            color="tab:red",
            linewidth=0.9,
            linestyle="--",
            label=f"base - asked drop ({asked_drop:g} points)",
        )
        shown.append(floor)
    return shown


def _draw_marks(ax, marks: dict) -> list[float]:
    """Each chosen configuration marked and labelled; their accuracies (%)."""
    shown: list[float] = []
    for (label, (acc, cost)), (marker, color) in zip(
        marks.items(), MARK_STYLES * len(marks), strict=False
    ):
        ax.scatter(
            [cost],
            [100.0 * acc],
            marker=marker,
            s=80,
            facecolor="none",
            edgecolor=color,
            linewidth=1.8,
            zorder=6,
            label=label,
        )
        ax.annotate(
            f"{100.0 * acc:.2f}% at {cost:.3f}",
            (cost, 100.0 * acc),
            textcoords="offset points",
            xytext=(8, -14),
            fontsize="x-small",
            color=color,
            bbox=_BOX,
        )
        shown.append(100.0 * acc)
    return shown


MIN_SPAN = 2.0  # points: the accuracy axis never spans less
_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}


def _focus(values: list[float]) -> tuple[float, float]:
    """Accuracy axis limits (points) around ``values`` with a 5% margin, at least ``MIN_SPAN`` wide."""
    if not values:
        return 0.0, 100.0
    lo, hi = min(values), max(values)
    pad = max(0.05 * (hi - lo), 0.5 * (MIN_SPAN - (hi - lo)))
    return max(0.0, lo - pad), min(100.0, hi + pad)


def _note_below(ax, fronts_by_method: dict[str, Front], lo: float) -> None:
    """A note at the bottom edge when front points lie below the axis."""
    below = [
        100.0 * a for f in fronts_by_method.values() for a in f.accuracy.tolist() if 100.0 * a < lo
    ]
    if below:
        ax.annotate(
            f"fronts continue below, down to {min(below):.1f}%",
            (0.02, 0.02),
            xycoords="axes fraction",
            fontsize="x-small",
            color="0.35",
            bbox=_BOX,
        )


def _draw_oracle(ax, oracle: tuple[float, float], top: float) -> None:
    """The oracle as a point when within the axis; else a marker at the top edge with its accuracy."""
    acc, cost = 100.0 * oracle[0], oracle[1]
    if acc <= top:
        ax.scatter(
            [cost], [acc], marker="^", s=70, color="grey", zorder=5, label="oracle (unreachable)"
        )
        return
    edge = (
        ax.get_xaxis_transform()
    )  # x in data, y in axes fraction: stays at the edge whatever the limits
    ax.scatter(
        [cost],
        [0.985],
        marker="^",
        s=70,
        color="grey",
        zorder=5,
        transform=edge,
        clip_on=False,
        label=f"oracle (unreachable, {acc:.1f}%: off the axis)",
    )
    ax.annotate(
        f"oracle {acc:.1f}% (above)",
        (cost, 0.985),
        xycoords=edge,
        textcoords="offset points",
        xytext=(8, -4),
        fontsize="x-small",
        color="grey",
        va="top",
    )


def plot_exit_distribution(problem, config, *, label: str | None = None, ax=None, path=None):
    """Bar chart of the share (%) of samples leaving at each enabled exit and the final one, each bar labelled
    with its count and the accuracy of the samples that left there; titled with ``label`` (e.g. the query
    that chose ``config``) or the configuration's exits and cost. ``problem``: an ExitProblem or a
    SplitEvaluator of the split."""
    checked(config, problem.cache)
    counts, right = problem.exit_outcomes(config)
    exits = list(config.exits) + [len(problem.cache.exits) - 1]
    names = [problem.cache.exits[e].name for e in exits]
    names[-1] += " (final)"
    share = (100.0 * counts / problem.n_samples).tolist()
    fig, ax = _axes(ax, figsize=(max(4.5, 0.7 * len(exits) + 2.5), 4.2))
    x = np.arange(len(exits))
    bars = ax.bar(x, share, color="tab:blue")
    for bar, n, r in zip(bars, counts.tolist(), right.tolist(), strict=True):
        text = f"{n:,}" + (f"\n{100.0 * r / n:.1f}% right" if n else "")
        ax.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize="x-small",
        )
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize="x-small")
    ax.set_ylabel("samples leaving (% of the split)")
    ax.set_ylim(0, max(share) * 1.25 + 1e-9)
    ev = problem.evaluate_one(config)
    what = label or f"{len(config.exits)} enabled exits"
    ax.set_title(
        f"{what}\n{problem.split}: {problem.n_samples:,} samples, accuracy {100.0 * ev.accuracy:.2f}%, "
        f"relative cost {ev.relative_cost:.3f}; bars: samples leaving there, % of them right",
        fontsize="small",
    )
    _finish(fig, path)
    return fig


def plot_hv_history(histories: dict[str, list[tuple[int, float]]], *, ax=None, path=None):
    """Hypervolume against evaluations, one step line per method (``(evals, hv)`` pairs)."""
    if not isinstance(histories, dict):
        raise SearchError(
            "`histories` must be a dict of method name -> list of (evaluations, hypervolume)"
        )
    fig, ax = _axes(ax)
    for method, hist in histories.items():
        try:
            arr = (
                np.asarray(hist, dtype=np.float64).reshape(len(hist), -1)
                if len(hist)
                else np.zeros((0, 2))
            )
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.shape[1] != 2:
            raise SearchError(
                f"history of {method!r} must be a list of (evaluations, hypervolume) pairs"
            )
        ax.step(arr[:, 0], arr[:, 1], where="post", marker=".", label=method)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume (ref. point (1, 1))")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    _finish(fig, path)
    return fig
