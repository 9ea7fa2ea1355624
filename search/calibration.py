"""Calibration data for certified answers: where it comes from (the cache's ``calibration`` split, or a
seeded cut of the search split) and whether it can serve (unseen rows, the same exits, enough samples)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._validation import SearchError, as_generator
from .certify import DEFAULT_BOUND, smallest_certifiable_drop
from .problem import ExitProblem

__all__ = ["DEFAULT_FRACTION", "CALIBRATION_SPLIT", "Roles", "calibration_roles", "check_calibration_split",
           "check_fraction", "planned_calibration_size", "check_certifiable", "make_roles"]

DEFAULT_FRACTION = 0.5
CALIBRATION_SPLIT = "calibration"
_MISMATCH_Z = 8.0          # an exit whose accuracy differs this much between search and calibration is refused


@dataclass(frozen=True)
class Roles:
    """The fit and calibration parts of one certification; ``calibration`` rows are in a seeded random order."""

    fit: ExitProblem
    calibration: ExitProblem
    split: str                 # "calibration" (the cache's split) or "search" (cut from it)
    fraction: float | None     # the calibration share of the search split when cut
    seed: int
    fit_is_given: bool = False  # fit is the problem handed in, so a front searched on it may serve


def check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise SearchError(f"--calibration-fraction {fraction}: must be in (0, 1) (the share of the search split "
                          "kept for calibration, e.g. 0.5)")
    return float(fraction)


def _split_parts(cache) -> dict | None:
    """Which dataset part each split's ``sample_index`` counts rows of, when the dump recorded it."""
    dataset = cache.meta.provenance.get("dataset")
    parts = (dataset.get("parameters") or {}).get("split_parts") if isinstance(dataset, dict) else None
    return parts if isinstance(parts, dict) else None


def check_calibration_split(cache) -> None:
    """Refuse a ``calibration`` split that cannot serve as calibration data for this cache's search split.

    Its rows must not be rows of ``search`` or ``holdout`` (``sample_index`` disjoint, where the two splits
    count rows of the same dataset part; without a record of parts, one index space is assumed), and its
    exits must be the search split's: an exit whose top-1 accuracy differs by more than 8 standard errors
    between the two splits marks predictions from other heads or another model.
    """
    if CALIBRATION_SPLIT not in cache.splits():
        return
    if cache.n_samples(CALIBRATION_SPLIT) == 0:
        raise SearchError("the cache's calibration split is empty")
    cal = np.asarray(cache.sample_index(CALIBRATION_SPLIT))
    parts = _split_parts(cache)
    if np.unique(cal).size != cal.size:
        raise SearchError("calibration split: sample_index repeats rows; each calibration sample must be distinct")
    for other in ("search", "holdout"):
        if other not in cache.splits() or (parts and parts.get(other) != parts.get(CALIBRATION_SPLIT)):
            continue
        shared = np.intersect1d(cal, np.asarray(cache.sample_index(other)))
        if shared.size:
            raise SearchError(f"calibration split shares {shared.size} rows with {other} (sample_index "
                              f"{shared[:3].tolist()}...); calibration data must be unseen by the search and the "
                              "holdout: dump it again with --calibration-size")
    labels_s, labels_c = np.asarray(cache.labels("search")), np.asarray(cache.labels(CALIBRATION_SPLIT))
    ids_s, ids_c = cache.topk_ids("search"), cache.topk_ids(CALIBRATION_SPLIT)
    for e, info in enumerate(cache.exits):
        a, b = np.mean(ids_s[e, 0] == labels_s), np.mean(ids_c[e, 0] == labels_c)
        pooled = (a * labels_s.size + b * labels_c.size) / (labels_s.size + labels_c.size)
        se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / labels_s.size + 1 / labels_c.size))
        if abs(a - b) > _MISMATCH_Z * se:
            raise SearchError(f"calibration split: exit {info.name!r} is right on {b:.2%} of calibration but "
                              f"{a:.2%} of search; its predictions come from other exits or another model")


def _cut_size(split_size: int, fraction: float, fitted: int | None) -> int:
    """Calibration samples cut from a search split of ``split_size`` (``fitted``: the size of the subsample the
    methods fit on, calibration then drawn from the rest); SearchError when the fit or the calibration part
    would be empty."""
    n_cal = int(round(split_size * fraction))
    if fitted is not None:
        n_cal = min(n_cal, split_size - fitted)
        if split_size == fitted:
            raise SearchError("no search samples lie outside the fitted subsample to calibrate on; "
                              "fit on fewer samples (--subsample) or add a calibration split")
    if not 0 < n_cal < split_size:
        raise SearchError(f"a calibration fraction of {fraction} of {split_size} search samples leaves the fit "
                          "or the calibration part empty")
    return n_cal


def planned_calibration_size(cache, fraction: float, fitted: int | None = None) -> int:
    """How many calibration samples a certification on ``cache`` will use, ``fitted``: the size of the
    subsample the methods fit on (None: the whole search split); SearchError when a part would be empty."""
    if CALIBRATION_SPLIT in cache.splits():
        return cache.n_samples(CALIBRATION_SPLIT)
    return _cut_size(cache.n_samples("search"), fraction, fitted)


def check_certifiable(max_drop: float, n_cal: int, delta: float, bound: str = DEFAULT_BOUND) -> None:
    """Refuse a drop no configuration without gains over the base could be certified for at this size."""
    least = smallest_certifiable_drop(n_cal, delta, bound)
    if max_drop < least:
        raise SearchError(f"a calibration set of {n_cal} samples cannot certify a drop of {100 * max_drop:g} points at "
                          f"delta {delta:g}: the smallest drop it certifies is {100 * least:.3f} points (a "
                          "configuration that agrees with the base model on every calibration sample); ask for more, "
                          "add calibration samples (data_cache.dump --calibration-size, --calibration-fraction) "
                          "or pass --uncertified")


def calibration_roles(search: ExitProblem, *, fraction: float = DEFAULT_FRACTION, seed: int = 0) -> Roles:
    """Fit and calibration parts for ``search``: an ExitProblem on the whole ``search`` split, or on a
    subsample of it (the problem the methods fitted on a large split).

    With a ``calibration`` split in the cache, ``search`` is the fit part whole. Otherwise a seeded
    ``fraction`` of the search split is kept for calibration: cut from ``search`` when it holds the whole
    split; drawn from the samples outside it when it holds a subsample (read from the cache).
    """
    if CALIBRATION_SPLIT not in search.cache.splits():
        check_fraction(fraction)
    return make_roles(search, fraction=fraction, seed=seed)


def make_roles(search: ExitProblem, *, fraction: float = DEFAULT_FRACTION, seed: int = 0) -> Roles:
    """:func:`calibration_roles` with ``fraction`` trusted (``search.search`` checked it once, with every
    other parameter)."""
    rng = as_generator(seed)
    cache = search.cache
    if CALIBRATION_SPLIT in cache.splits():
        check_calibration_split(cache)
        cal = search.on_split(CALIBRATION_SPLIT)
        return Roles(search, cal.take(rng.permutation(cal.n_samples)), CALIBRATION_SPLIT, None, int(seed), True)
    n_cal = _cut_size(search.split_size, fraction, None if search.samples is None else search.n_samples)
    if search.samples is not None:
        outside = np.setdiff1d(np.arange(search.split_size), search.samples)
        cal = ExitProblem(cache, search.split, objective=search.objective, score=search.score, costs=search.costs,
                          samples=np.sort(rng.choice(outside, n_cal, replace=False)))
        return Roles(search, cal.take(rng.permutation(n_cal)), "search", float(fraction), int(seed), True)
    perm = rng.permutation(search.n_samples)
    return Roles(search.take(np.sort(perm[n_cal:])), search.take(perm[:n_cal]), "search", float(fraction), int(seed))
