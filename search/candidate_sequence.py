"""Pareto Testing's candidate sequences, fixed on the fit part alone before calibration is looked at:
tempered candidates, the drop query's orders (``agree``, ``cost``, ``smoothed``, ``fit_z``) and the budget
query's."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._validation import SearchError
from .certificates import outcomes
from .certify import paired_losses
from .config import ExitConfig
from .problem import ExitProblem

__all__ = ["DEFAULT_ORDER", "ORDERS", "budget_sequence", "dedupe", "drop_sequence", "tempered"]

DEFAULT_ORDER = "agree"  # the drop sequence (benchmarks/bench_population.py compares the orders)
ORDERS = ("agree", "cost", "smoothed", "fit_z")
_SLACK = 1.0  # keep candidates whose predicted z on calibration is within this of passing


def tempered(
    fit: ExitProblem, configs: list[ExitConfig], shares: tuple[float, ...]
) -> list[ExitConfig]:
    """Each configuration with its thresholds moved part of the way to its exits' highest score on the fit part:
    fewer samples leave early, so the sequence also holds configurations between the fit front and the base
    model (the fit front skips them where cheaper configurations did better on the fit part by chance)."""
    top = fit.scores.max(axis=1).astype(np.float64)
    out = []
    for c in configs:
        for a in shares:
            ts = tuple(
                t + a * max(float(top[e]) - t, 0.0)
                for e, t in zip(c.exits, c.thresholds, strict=True)
            )
            if c.exits and ts != c.thresholds:
                # the same exits, thresholds between a valid one and a score seen there: valid by construction
                out.append(
                    dataclasses.replace(c, thresholds=ts, id="", predicted={}).built_for(fit.cache)
                )
    return out


def dedupe(configs: list[ExitConfig]) -> list[ExitConfig]:
    """``configs`` without repeats, in their first order."""
    return list(dict.fromkeys(configs))


def _fit_rows(
    fit: ExitProblem, candidates: list[ExitConfig], eps: float
) -> list[tuple[float, float, float, ExitConfig, float]]:
    """Per candidate on the fit part: observed drop, its per-sample variance, mean relative cost, the
    candidate, and its discordance (share of samples where it and the base model disagree on being right)."""
    n_f = fit.n_samples
    base = fit.correct[fit.final_exit]
    rows = []
    for c in candidates:
        right, cost, _ = outcomes(fit, c)
        L = paired_losses(right, base)
        var = max(L.discordance - L.drop**2, 1.0 / n_f)
        rows.append((L.drop, var, float(cost.mean()), c, L.discordance))
    return rows


def _isotonic_decreasing(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares fit of ``x`` (ordered by increasing cost) that never increases (pool adjacent
    violators)."""
    vals: list[float] = []
    wts: list[float] = []
    sizes: list[int] = []
    for xi, wi in zip(x, w, strict=True):
        vals.append(float(xi))
        wts.append(float(wi))
        sizes.append(1)
        while len(vals) > 1 and vals[-2] < vals[-1]:
            v, ww, n = vals.pop(), wts.pop(), sizes.pop()
            vals[-1] = (vals[-1] * wts[-1] + v * ww) / (wts[-1] + ww)
            wts[-1] += ww
            sizes[-1] += n
    return np.repeat(vals, sizes)


def drop_sequence(
    fit: ExitProblem,
    candidates: list[ExitConfig],
    eps: float,
    delta: float,
    n_cal: int,
    order: str = DEFAULT_ORDER,
) -> list[ExitConfig]:
    """The sequence to test, fixed on the fit part alone.

    ``fit_z``: by the fit part's z for drop <= eps (safest first, ties to the more expensive), each kept
    only if cheaper than all safer ones, stopped where the predicted z on ``n_cal`` samples is out of
    reach. ``cost``: most expensive first, the candidates out of reach dropped. ``smoothed``: most
    expensive first, out of reach judged on the fit drop smoothed along the cost axis (non-increasing in
    cost, so lucky or unlucky single candidates take their neighbours' level). ``agree`` (the default):
    ``cost``, each candidate kept only if no cheaper one disagrees with the base on fewer fit samples;
    a candidate that disagrees more than a cheaper one is one whose fit drop is most likely luck (the
    fit front picked it for its gains on the fit rows), and its failure would end the walk.
    """
    from scipy import stats

    if order not in ORDERS:
        raise SearchError(f"order {order!r}: choose one of {list(ORDERS)}")
    rows = _fit_rows(fit, candidates, eps)
    z_pass = float(stats.norm.ppf(1 - delta)) - _SLACK
    if order == "fit_z":
        rows.sort(key=lambda r: (-(eps - r[0]) / math.sqrt(r[1]), -r[2]))
        sequence, cheapest = [], math.inf
        for drop, var, cost, c, _ in rows:
            if (eps - drop) / math.sqrt(var) * math.sqrt(n_cal) < z_pass:
                break
            if cost < cheapest:
                sequence.append(c)
                cheapest = cost
        return sequence
    rows.sort(key=lambda r: r[2])  # cheapest first
    drops = np.array([r[0] for r in rows])
    if order == "smoothed" and rows:
        drops = _isotonic_decreasing(drops, np.ones(len(rows)))
    kept, last_cost = [], None
    for (_, var, cost, c, s), d in reversed(list(zip(rows, drops, strict=True))):
        if (
            cost >= 1.0
            or (eps - d) / math.sqrt(var) * math.sqrt(n_cal) < z_pass
            or cost == last_cost
        ):
            continue  # no cheaper than the base model, out of reach, or a tie
        kept.append((c, s))
        last_cost = cost
    if order != "agree":
        return [c for c, _ in kept]
    sequence, least = [], math.inf
    for c, s in reversed(kept):  # cheapest first: keep those agreeing more than every cheaper one
        if s <= least:
            sequence.append(c)
        least = min(least, s)
    return sequence[::-1]


def budget_sequence(
    fit: ExitProblem, candidates: list[ExitConfig], budget: float, delta: float, n_cal: int
) -> list[ExitConfig]:
    """Order by the fit part's z for mean relative cost <= budget (cheapest-safest first, ties to the more
    accurate), keep each only if more accurate than all safer ones, cut where out of reach at ``n_cal``."""
    from scipy import stats

    rows = []
    for c in candidates:
        right, cost, _ = outcomes(fit, c)
        unit_z = (budget - cost.mean()) / max(float(cost.std()), 1.0 / fit.n_samples)
        rows.append((unit_z, float(right.mean()), c))
    rows.sort(key=lambda r: (-r[0], -r[1]))
    z_pass = float(stats.norm.ppf(1 - delta)) - _SLACK
    sequence, best = [], -math.inf
    for unit_z, acc, c in rows:
        if unit_z * math.sqrt(n_cal) < z_pass:
            break
        if acc > best:
            sequence.append(c)
            best = acc
    return sequence
