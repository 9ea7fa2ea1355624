"""Calibration data for certified answers: where it comes from (the cache's ``calibration`` split, or a
seeded cut of the search split) and whether it can serve (unseen rows, the same exits, enough samples)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ._validation import SearchError, as_generator, check_split
from .certify import DEFAULT_BOUND, smallest_certifiable_drop
from .costs import CostTable
from .learned import Params
from .overlap import Overlap, row_hashes, split_overlap
from .problem import ExitProblem

__all__ = [
    "DEFAULT_FRACTION",
    "CALIBRATION_SPLIT",
    "MATERIAL_OVERLAP",
    "Roles",
    "calibration_roles",
    "calibration_rows",
    "recorded_calibration",
    "check_calibration_split",
    "holdout_warnings",
    "material",
    "check_fraction",
    "planned_calibration_size",
    "check_certifiable",
    "make_roles",
]

DEFAULT_FRACTION = 0.5
CALIBRATION_SPLIT = "calibration"
MATERIAL_OVERLAP = (
    0.005  # calibration rows repeating fit rows by content beyond this share refuse a certificate
)
_MISMATCH_Z = (
    8.0  # an exit whose accuracy differs this much between search and calibration is refused
)


@dataclass(frozen=True)
class Roles:
    """The fit and calibration parts of one certification; ``calibration`` rows are in a seeded random order."""

    fit: ExitProblem
    calibration: ExitProblem
    split: str  # "calibration" (the cache's split) or "search" (cut from it)
    fraction: float | None  # the calibration share of the search split when cut
    seed: int
    fit_is_given: bool = False  # fit is the problem handed in, so a front searched on it may serve


def check_fraction(fraction: float | None) -> float:
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0.0 < fraction < 1.0
    ):
        raise SearchError(
            f"--calibration-fraction {fraction}: must be in (0, 1) (the share of the search split "
            "kept for calibration, e.g. 0.5)"
        )
    return float(fraction)


def _split_parts(cache) -> dict | None:
    """Which dataset part each split's ``sample_index`` counts rows of, when the dump recorded it."""
    dataset = cache.meta.provenance.get("dataset")
    parts = (
        (dataset.get("parameters") or {}).get("split_parts") if isinstance(dataset, dict) else None
    )
    return parts if isinstance(parts, dict) else None


def material(overlap: Overlap) -> bool:
    """Whether repeated rows are enough to refuse a certificate: more than ``MATERIAL_OVERLAP`` of its rows."""
    return overlap.repeated > MATERIAL_OVERLAP * overlap.n


def _refuse_or_warn(overlap: Overlap, fix: str) -> list[str]:
    """SearchError for a material overlap of calibration with fit data; a warning line for a smaller one."""
    if material(overlap):
        raise SearchError(
            f"{overlap.describe()}; calibration data must be unseen by the search, so no certificate "
            f"can rest on it: {fix}"
        )
    if overlap.repeated:
        return [
            f"{overlap.describe()}: fewer than {MATERIAL_OVERLAP:.1%}, kept; duplicated images in the dataset?"
        ]
    return []


def holdout_warnings(
    cache, split: str, rows: np.ndarray | None = None, name: str | None = None
) -> list[str]:
    """A warning line when the rows of ``split`` (only ``rows``; called ``name``) repeat holdout rows in more than
    ``MATERIAL_OVERLAP`` of the smaller of the two."""
    if "holdout" not in cache.splits() or split == "holdout":
        return []
    overlap = split_overlap(cache, split, "holdout", rows=rows)
    if overlap.repeated <= MATERIAL_OVERLAP * min(overlap.n, cache.n_samples("holdout")):
        return []
    overlap = dataclasses.replace(overlap, split=name or split)
    return [
        f"{overlap.describe()}: holdout figures are not an independent check of what was certified on them"
    ]


def check_calibration_split(cache) -> list[str]:
    """Refuse calibration data that cannot serve this cache's search split; return warning lines.

    With a ``calibration`` split: its rows must not be rows of ``search`` or ``holdout`` (``sample_index``
    disjoint, where the two splits count rows of the same dataset part; without a record of parts, one
    index space is assumed), nor repeat more than ``MATERIAL_OVERLAP`` of its rows in ``search`` by content
    (``search.overlap``: whatever the indices or the provenance say; fewer repeats, or repeats in the
    holdout, are warnings), and its exits must be the search split's: an exit whose top-1 accuracy differs
    by more than 8 standard errors between the two splits marks predictions from other heads or another
    model. Without one (calibration cut from search), the search split must not repeat a material share
    of its own rows (a cut would put copies on both sides).
    """
    if CALIBRATION_SPLIT not in cache.splits():
        hashes = row_hashes(cache, "search")
        copies = Overlap(
            "search",
            "search (elsewhere in the split)",
            hashes.size,
            hashes.size - np.unique(hashes).size,
        )
        return _refuse_or_warn(
            copies,
            "a calibration part cut from it would share rows with the fit part; "
            "remove the duplicates or dump a calibration split",
        )
    if cache.n_samples(CALIBRATION_SPLIT) == 0:
        raise SearchError("the cache's calibration split is empty")
    cal = np.asarray(cache.sample_index(CALIBRATION_SPLIT))
    parts = _split_parts(cache)
    if np.unique(cal).size != cal.size:
        raise SearchError(
            "calibration split: sample_index repeats rows; each calibration sample must be distinct"
        )
    for other in ("search", "holdout"):
        if other not in cache.splits() or (
            parts and parts.get(other) != parts.get(CALIBRATION_SPLIT)
        ):
            continue
        shared = np.intersect1d(cal, np.asarray(cache.sample_index(other)))
        if shared.size:
            raise SearchError(
                f"calibration split shares {shared.size} rows with {other} (sample_index "
                f"{shared[:3].tolist()}...); calibration data must be unseen by the search and the "
                "holdout: dump it again with --calibration-size"
            )
    warnings = _refuse_or_warn(
        split_overlap(cache, CALIBRATION_SPLIT, "search"), "dump it again with --calibration-size"
    )
    warnings += holdout_warnings(cache, CALIBRATION_SPLIT)
    _check_same_exits(cache)
    return warnings


def _check_same_exits(cache) -> None:
    labels_s, labels_c = (
        np.asarray(cache.labels("search")),
        np.asarray(cache.labels(CALIBRATION_SPLIT)),
    )
    ids_s, ids_c = cache.topk_ids("search"), cache.topk_ids(CALIBRATION_SPLIT)
    for e, info in enumerate(cache.exits):
        a, b = np.mean(ids_s[e, 0] == labels_s), np.mean(ids_c[e, 0] == labels_c)
        pooled = (a * labels_s.size + b * labels_c.size) / (labels_s.size + labels_c.size)
        se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / labels_s.size + 1 / labels_c.size))
        if abs(a - b) > _MISMATCH_Z * se:
            raise SearchError(
                f"calibration split: exit {info.name!r} is right on {b:.2%} of calibration but "
                f"{a:.2%} of search; its predictions come from other exits or another model"
            )


def _cut_size(split_size: int, fraction: float, fitted: int | None) -> int:
    """Calibration samples cut from a search split of ``split_size`` (``fitted``: the size of the subsample the
    methods fit on, calibration then drawn from the rest); SearchError when the fit or the calibration part
    would be empty."""
    n_cal = int(round(split_size * fraction))
    if fitted is not None:
        n_cal = min(n_cal, split_size - fitted)
        if split_size == fitted:
            raise SearchError(
                "no search samples lie outside the fitted subsample to calibrate on; "
                "fit on fewer samples (--subsample) or add a calibration split"
            )
    if not 0 < n_cal < split_size:
        raise SearchError(
            f"a calibration fraction of {fraction} of {split_size} search samples leaves the fit "
            "or the calibration part empty"
        )
    return n_cal


def planned_calibration_size(cache, fraction: float, fitted: int | None = None) -> int:
    """How many calibration samples a certification on ``cache`` will use, ``fitted``: the size of the
    subsample the methods fit on (None: the whole search split); SearchError when a part would be empty."""
    if CALIBRATION_SPLIT in cache.splits():
        return cache.n_samples(CALIBRATION_SPLIT)
    return _cut_size(cache.n_samples("search"), fraction, fitted)


def check_certifiable(
    max_drop: float, n_cal: int, delta: float, bound: str = DEFAULT_BOUND
) -> None:
    """Refuse a drop no configuration without gains over the base could be certified for at this size."""
    least = smallest_certifiable_drop(n_cal, delta, bound)
    if max_drop < least:
        raise SearchError(
            f"a calibration set of {n_cal} samples cannot certify a drop of {100 * max_drop:g} points at "
            f"delta {delta:g}: the smallest drop it certifies is {100 * least:.3f} points (a "
            "configuration that agrees with the base model on every calibration sample); ask for more, "
            "add calibration samples (data_cache.dump --calibration-size, --calibration-fraction) "
            "or pass --uncertified"
        )


def calibration_rows(
    split_size: int, fraction: float, seed: int, fitted: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a search split of ``split_size`` a certification cuts for calibration, in the order they are
    tested, and the fit rows (sorted): a seeded ``fraction`` of the split, drawn outside ``fitted`` (the sorted
    rows of a fitted subsample, then the fit rows) when given. The one definition both a certification
    and its verification (``search.verify``) use."""
    rng = as_generator(seed)
    n_cal = _cut_size(split_size, fraction, None if fitted is None else fitted.size)
    if fitted is not None:
        outside = np.setdiff1d(np.arange(split_size), fitted)
        rows = np.sort(rng.choice(outside, n_cal, replace=False))
        return rows[rng.permutation(n_cal)], fitted
    perm = rng.permutation(split_size)
    return perm[:n_cal], np.sort(perm[n_cal:])


def _rows_problem(
    cache,
    split: str,
    rows: np.ndarray,
    *,
    score: str,
    costs: CostTable,
    rules: tuple[str, ...] | None = None,
    params: Params | None = None,
) -> ExitProblem:
    """An ExitProblem on ``rows`` of ``split`` in their given order (only those rows are read); learned rules
    scored with ``params`` (never fitted on these rows)."""
    ordered = np.sort(rows)
    held = ExitProblem(
        cache,
        split,
        objective=costs.objective,
        score=score,
        costs=costs,
        samples=ordered,
        rules=rules,
        params=params or {},  # never fitted on these rows
    )
    return held.take(np.searchsorted(ordered, rows))


def calibration_roles(
    search: ExitProblem, *, fraction: float = DEFAULT_FRACTION, seed: int = 0
) -> Roles:
    """Fit and calibration parts for ``search``: an ExitProblem on the whole ``search`` split, or on a
    subsample of it (the problem the methods fitted on a large split).

    With a ``calibration`` split in the cache, ``search`` is the fit part whole. Otherwise a seeded
    ``fraction`` of the search split is kept for calibration (:func:`calibration_rows`): cut from ``search``
    when it holds the whole split; drawn from the samples outside it when it holds a subsample (read from
    the cache).
    """
    if CALIBRATION_SPLIT not in search.cache.splits():
        check_fraction(fraction)
    return make_roles(search, fraction=fraction, seed=seed)


def make_roles(search: ExitProblem, *, fraction: float = DEFAULT_FRACTION, seed: int = 0) -> Roles:
    """:func:`calibration_roles` with ``fraction`` trusted (``search.search`` checked it once, with every
    other parameter)."""
    cache = search.cache
    if CALIBRATION_SPLIT in cache.splits():
        check_calibration_split(cache)
        cal = search.on_split(CALIBRATION_SPLIT)
        order = as_generator(seed).permutation(cal.n_samples)
        return Roles(search, cal.take(order), CALIBRATION_SPLIT, None, int(seed), True)
    rows, fit_rows = calibration_rows(search.split_size, fraction, seed, search.samples)
    if search.samples is not None:
        cal = _rows_problem(
            cache,
            search.split,
            rows,
            score=search.score,
            costs=search.costs,
            rules=search.rules,
            params=search.params,
        )
        return Roles(search, cal, "search", float(fraction), int(seed), True)
    return Roles(search.take(fit_rows), search.take(rows), "search", float(fraction), int(seed))


def recorded_calibration(
    cache,
    split: str,
    fraction: float | None,
    seed: int,
    *,
    score: str,
    costs: CostTable,
    fitted: np.ndarray | None = None,
    rules: tuple[str, ...] | None = None,
    params: Params | None = None,
) -> tuple[ExitProblem, np.ndarray | None]:
    """The calibration rows a certificate records (``split``, ``fraction``, ``seed``; ``fitted``: the sorted
    rows of the subsample the search fitted on), in the order they were tested, as an ExitProblem holding
    ``rules`` (learned ones scored with ``params``); and the fit rows of the search split (None for a calibration
    split). Only the calibration rows are read."""
    if split == CALIBRATION_SPLIT:
        check_split(cache, CALIBRATION_SPLIT)
        order = as_generator(seed).permutation(cache.n_samples(CALIBRATION_SPLIT))
        return _rows_problem(
            cache, CALIBRATION_SPLIT, order, score=score, costs=costs, rules=rules, params=params
        ), None
    rows, fit_rows = calibration_rows(
        cache.n_samples("search"), check_fraction(fraction), seed, fitted
    )
    held = _rows_problem(
        cache, "search", rows, score=score, costs=costs, rules=rules, params=params
    )
    return held, fit_rows
