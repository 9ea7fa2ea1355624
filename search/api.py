"""``search.search(cache, ...) -> SearchResult``: what ``python -m search.pareto`` does, as one call.

Runs the methods on the ``search`` split (on a seeded random subsample of it when it is large), scores
every front exactly on all of ``search`` and on ``holdout`` chunk by chunk (bounded memory), computes
the indicators of the table and answers the constrained queries (``max_drop``, ``budget``; certified on
calibration data unless ``uncertified``). The parameters are declared once in ``search/params.py`` and
checked once, here at the boundary; the cache is opened (and checked) once and passed down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import sys
import warnings
from pathlib import Path

import numpy as np

from data_cache import open_cache
from data_cache._base import CacheReader
from data_cache._validation import identical_splits_messages
from data_cache.bundled import bundled_cache_path

from ._answers import answer_queries
from ._validation import SearchError, SearchWarning
from .budget import Budget
from .calibration import (
    CALIBRATION_SPLIT,
    DEFAULT_FRACTION,
    calibration_rows,
    check_calibration_split,
    check_certifiable,
    planned_calibration_size,
)
from .costs import cost_table
from .engines import create_engine, engine_class
from .engines._cap import check_max_exits
from .exact import SplitEvaluator
from .front import Front
from .indicators import HV, IGDPlus, saving_at_drop
from .learned import learned
from .params import PARAMS, Options, check_options
from .problem import ExitProblem
from .result import Indicators, SearchResult
from .scores import resolve_rules
from .standalone import oracle_bound
from .subsample import (
    FitSample,
    certification_rows,
    check_fit_memory,
    fit_problem,
    never_right,
    plan_fit,
)
from .time_objective import TimeCostTable

__all__ = ["search", "open_search_cache"]


def search(
    cache: str | Path | CacheReader | None = None, *, options: Options | None = None, **params
) -> SearchResult:
    """Search the exit configurations of ``cache`` (a folder, an opened reader, or None: the bundled cache).

    ``params`` are the parameters of ``search/params.py`` (``PARAMS``; listed below), checked once: a bad
    one is a SearchError of one line naming it. ``options`` (from ``params.options_from_args``) replaces
    them when a command line has checked them already. Returns a :class:`~search.result.SearchResult`;
    a query that cannot be answered is recorded in its ``failure`` (``SearchResult.failure``), not raised.
    Warnings (identical splits, a sampler asked for too many trials) are ``SearchWarning``.
    """
    if options is not None and params:
        raise SearchError("search(): pass the parameters or options=, not both")
    opts = check_options(params) if options is None else options
    engines = {m: _engine(m, opts) for m in opts.methods}
    reader, rules, sample = _open_and_plan(cache, opts)
    costs = _costs(opts, reader)
    fit_rows = _learned_fit_rows(opts, reader, sample, rules)
    fit = fit_problem(
        reader,
        "search",
        sample,
        objective=opts.objective,
        score=opts.score,
        chunk_size=opts.chunk_size,
        costs=costs,
        rules=rules,
        fit_rows=fit_rows,
    )
    for line in never_right(fit):  # legal, but a front there means nothing
        warnings.warn(line, SearchWarning, stacklevel=2)
    on_search = (
        SplitEvaluator.of_problem(fit, chunk_size=opts.chunk_size)
        if sample is None
        else SplitEvaluator.like(fit, "search", chunk_size=opts.chunk_size)
    )
    holdout = SplitEvaluator.like(fit, "holdout", chunk_size=opts.chunk_size)
    fronts = _run_engines(opts, engines, fit)
    fit_union = _union(fronts)  # on the problem the methods fitted on
    if sample is not None:
        fronts = _rescore(fronts, on_search, sample)
    union = _union(fronts)
    holdout.evaluations(
        [c for f in fronts.values() for c in f.configs]
    )  # one pass over holdout for all
    holdout_F = {
        m: holdout.evaluate(f.configs) if len(f) else np.zeros((0, 2)) for m, f in fronts.items()
    }
    answers = answer_queries(opts, fit, fit_union, on_search, holdout, union)
    return SearchResult(
        reader,
        opts,
        fronts,
        union,
        holdout_F,
        on_search,
        holdout,
        oracle_bound(on_search),
        _indicators(fronts, union, holdout_F, holdout.base.accuracy),
        answers,
        sample,
    )


def _open_and_plan(
    cache: str | Path | CacheReader | None, opts: Options
) -> tuple[CacheReader, tuple[str, ...], FitSample | None]:
    """The cache opened and checked against the options, the rules it serves and the fit sample (its
    memory checked before anything is read)."""
    reader = open_search_cache(cache, skip_integrity_check=opts.skip_integrity_check)
    for line in identical_splits_messages(getattr(reader, "manifest", None) or {}):
        warnings.warn(line, SearchWarning, stacklevel=3)
    check_max_exits(
        opts.max_exits, len({e.position for e in reader.exits[:-1]}), name=opts.label("max_exits")
    )
    rules = resolve_rules(opts.rules, opts.score, reader, opts.label("rules"), opts.label("score"))
    sample = plan_fit(
        reader, "search", subsample=opts.subsample, above=opts.subsample_above, seed=opts.seed
    )
    _check_certification(opts, reader, sample)
    certified = not opts.uncertified and (opts.max_drop is not None or opts.budget is not None)
    fraction = DEFAULT_FRACTION if opts.calibration_fraction is None else opts.calibration_fraction
    check_fit_memory(
        sample.size if sample else reader.n_samples("search"),
        len(reader.exits) * len(rules),
        opts.methods,
        opts.memory_limit * 1e9,
        calibration_rows=certification_rows(reader, fraction, sample) if certified else 0,
    )
    return reader, rules, sample


def _learned_fit_rows(
    opts: Options, cache: CacheReader, sample: FitSample | None, rules: tuple[str, ...]
) -> np.ndarray | None:
    """The rows of the fit problem that learned rules (``gate``) are fitted on: all it holds, except in a certified
    search cutting calibration rows out of the whole search split, where they are the fit part alone (the rows
    ``make_roles`` keeps for fitting, by the same seeded cut): gates never see calibration or holdout rows."""
    certified = not opts.uncertified and (opts.max_drop is not None or opts.budget is not None)
    if (
        not learned(rules)
        or not certified
        or sample is not None
        or CALIBRATION_SPLIT in cache.splits()
    ):
        return None
    fraction = DEFAULT_FRACTION if opts.calibration_fraction is None else opts.calibration_fraction
    return calibration_rows(cache.n_samples("search"), fraction, opts.seed)[1]


search.__doc__ = (
    (search.__doc__ or "")
    + "\n    Parameters (``search/params.py``):\n"
    + "".join(
        f"\n    ``{p.name}`` (default {p.default!r}): {p.help.replace('%%', '%')}"
        for p in PARAMS.values()
    )
)


def open_search_cache(
    cache: str | Path | CacheReader | None, *, skip_integrity_check: bool = False
) -> CacheReader:
    """``cache`` opened and checked once (``data_cache.open_cache``); None: the cache bundled in data_cache/."""
    if cache is None:
        cache = bundled_cache_path()
        if cache is None:
            raise SearchError(
                "no CACHE given and no cache is bundled in data_cache/bundled/; name a cache folder"
            )
    return open_cache(cache, skip_integrity_check=skip_integrity_check)


def _engine(name: str, opts: Options):
    accepted = inspect.signature(engine_class(name).__init__).parameters
    return create_engine(name, **{k: v for k, v in opts.engine_options().items() if k in accepted})


def _costs(opts: Options, cache):
    """The cost table the search runs on, built once; a time table read and checked here (one line if it cannot
    serve), and a certified budget refused where the time is not additive (B > 1: no per-sample cost to test)."""
    try:
        costs = cost_table(
            cache,
            opts.objective,
            table=opts.cost_table,
            batch_size=opts.batch_size,
            rebatch=opts.rebatch,
        )
    except SearchError as exc:
        raise SearchError(
            f"{opts.label('cost_table')}: {exc}" if opts.objective == "time" else str(exc)
        ) from None
    if (
        opts.budget is not None
        and not opts.uncertified
        and isinstance(costs, TimeCostTable)
        and not costs.additive
    ):
        raise SearchError(
            f"{opts.label('budget')} on {opts.label('objective')} time at batch size "
            f"{costs.batch_size} cannot be certified: a batch's time is not a sum of per-sample costs; "
            f"add {opts.label('uncertified')}, search for re-batched serving ({opts.label('rebatch')}), "
            "or profile at --batch-size 1"
        )
    return costs


def _check_certification(opts: Options, cache, sample: FitSample | None) -> None:
    """Before any search: the calibration data can serve (neither it nor the fit part empty), and can certify
    the asked drop at all; ``sample``: the subsample the methods will fit on."""
    if opts.uncertified or (opts.max_drop is None and opts.budget is None):
        return
    for line in check_calibration_split(
        cache
    ):  # content overlaps too small to refuse, or with the holdout
        warnings.warn(line, SearchWarning, stacklevel=2)
    if CALIBRATION_SPLIT in cache.splits() and opts.calibration_fraction is not None:
        n_cal = cache.n_samples(CALIBRATION_SPLIT)
        raise SearchError(
            f"the cache has a calibration split ({n_cal} samples): it is the "
            f"calibration set; {opts.label('calibration_fraction')} only cuts a search split when there "
            "is none"
        )
    fraction = DEFAULT_FRACTION if opts.calibration_fraction is None else opts.calibration_fraction
    n_cal = planned_calibration_size(cache, fraction, None if sample is None else sample.size)
    if opts.max_drop is not None:
        check_certifiable(opts.max_drop / 100, n_cal, opts.risk, opts.bound)


def _run_engines(opts: Options, engines: dict, problem: ExitProblem) -> dict[str, Front]:
    """Run every engine on ``problem`` (a progress bar on stderr with ``opts.progress``)."""
    budget = Budget(max_evals=opts.evaluations, max_seconds=opts.time_limit)
    fronts: dict[str, Front] = {}
    with _progress(len(engines), disable=not opts.progress) as bar:
        for name, engine in engines.items():
            bar.set_postfix_str(name)
            fronts[name] = engine.run(
                problem,
                budget=budget,
                seed=opts.seed,
                max_exits=opts.max_exits,
                callback=lambda eng, prob, name=name: bar.set_postfix_str(
                    f"{name}: {prob.n_evals} evaluations", refresh=True
                ),
            )
            bar.update()
    return fronts


class _NoBar:
    """What the progress bar offers, doing nothing (tqdm is not even imported)."""

    def set_postfix_str(self, *args, **kwargs) -> None:
        pass

    def update(self, *args) -> None:
        pass


@contextlib.contextmanager
def _progress(total: int, *, disable: bool):
    if disable:
        yield _NoBar()
        return
    from tqdm import tqdm

    with tqdm(total=total, desc="search", file=sys.stderr) as bar:
        yield bar


def _union(fronts: dict[str, Front]) -> Front:
    """The non-dominated configurations of every method's front, as their own numbers say."""
    configs = [c for f in fronts.values() for c in f.configs]
    return Front(configs, np.concatenate([f.F for f in fronts.values()]), "union").pareto()


def _rescore(
    fronts: dict[str, Front], search: SplitEvaluator, sample: FitSample
) -> dict[str, Front]:
    """Fronts fitted on a subsample, scored exactly on the whole search split (one pass for all) and
    kept non-dominated there."""
    search.evaluations([c for f in fronts.values() for c in f.configs])
    out = {}
    for name, f in fronts.items():
        exact = dataclasses.replace(
            f, F=search.evaluate(f.configs) if len(f) else np.zeros((0, 2))
        ).pareto()
        note = (
            f"fitted on {sample.size:,} of {sample.of:,} samples; {len(exact)} of {len(f)} configurations "
            "non-dominated on all"
        )
        out[name] = dataclasses.replace(exact, message="; ".join(m for m in (f.message, note) if m))
    return out


def _indicators(
    fronts: dict[str, Front], union: Front, holdout_F: dict[str, np.ndarray], base_holdout: float
) -> list[Indicators]:
    """The table's row of every method."""
    hv = HV()
    best_known = IGDPlus(union.F) if len(union) else None
    return [
        Indicators(
            name,
            len(front),
            hv(front.F),
            hv(holdout_F[name]),
            best_known(front.F) if best_known and len(front) else None,
            saving_at_drop(holdout_F[name], base_holdout, 0.005),
            saving_at_drop(holdout_F[name], base_holdout, 0.01),
            front.n_evals,
            front.exec_time,
        )
        for name, front in fronts.items()
    ]
