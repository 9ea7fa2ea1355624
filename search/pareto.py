"""``python -m search.pareto [CACHE]``: Pareto-optimal exit configurations of a cache.

Runs the chosen methods on the ``search`` split (on a seeded random subsample of it when it is large:
``--subsample``, ``--subsample-above``), scores every front exactly on all of ``search`` and on
``holdout`` chunk by chunk (bounded memory), prints a table (points, hypervolume, cost saved at 0.5
and 1 point drop, evaluations, seconds), answers the constrained queries (``--max-drop``, ``--budget``;
certified on calibration data unless ``--uncertified``, ``search.pareto_testing``), exports
``exitconfig/1`` JSON and draws figures. Data errors print one line each and exit with status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import sys
import warnings
from pathlib import Path

import numpy as np

from data_cache import CacheError, open_cache
from data_cache._validation import warn_identical_splits
from data_cache.bundled import bundled_cache_path
from data_cache.cli_types import (PLOT_SUFFIXES, CommandParser, float_in, fraction, int_at_least, non_negative_int,
                                  positive_float, positive_int, seed)
from data_cache.outputs import OutputError, atomic_outputs, check_outputs, cli_entry

from ._certified_text import budget_failure, budget_title, drop_title
from ._validation import SearchError, SearchWarning, check_scalar
from .budget import Budget
from .calibration import (CALIBRATION_SPLIT, DEFAULT_FRACTION, calibration_roles, check_calibration_split,
                          check_certifiable, check_fraction, planned_calibration_size)
from .certify import BOUNDS, DEFAULT_BOUND, check_delta
from .chunks import DEFAULT_CHUNK_SIZE
from .config import ExitConfig
from .costs import list_cost_models
from .engines import create_engine, engine_class, list_engines
from .exact import SplitEvaluator
from .export import build_export, write_export
from .front import Front
from .indicators import HV, IGDPlus, saving_at_drop
from .pareto_testing import DEFAULT_DELTA, certify_budget, certify_drop, fit_front
from .problem import ExitProblem
from .scores import SCORE_KINDS
from .standalone import oracle_bound, standalone_table
from .subsample import (DEFAULT_SUBSAMPLE, DEFAULT_SUBSAMPLE_ABOVE, FitSample, check_fit_memory, fit_problem,
                        plan_fit)

__all__ = ["main", "build_parser"]

DEFAULT_METHODS = "dp,global,geometric,greedy"
# options the CLI may hand to an engine; each engine receives those its constructor accepts
ENGINE_OPTIONS = ("storage", "study_name", "workers", "sampler", "pop_size", "encoding")
DEFAULT_MEMORY_LIMIT_GB = 8.0


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m search.pareto",
        description="Search early-exit configurations on a prediction cache: Pareto fronts of accuracy "
                    "against cost, constrained queries, JSON export and plots.")
    p.add_argument("cache", nargs="?", help="cache folder (default: the cache bundled in data_cache/)")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma-separated search methods (default {DEFAULT_METHODS}); 'list' prints them all")
    p.add_argument("--objective", choices=list_cost_models(), default="macs",
                   help="cost model (contract/costs/): counted MACs, measured latency if the cache has it, or units "
                        "(each segment or head costs 1) (default macs)")
    p.add_argument("--score", choices=SCORE_KINDS, default="max_prob",
                   help="confidence score compared with thresholds (default max_prob)")
    p.add_argument("--max-drop", type=float_in(0.0, 100.0, what="a number of points in [0, 100]"), metavar="POINTS",
                   help="answer: cheapest configuration within POINTS percentage points of the base top-1 "
                        "accuracy (e.g. 0.5), certified on calibration data with confidence 1-DELTA (--risk)")
    p.add_argument("--budget", type=positive_float, metavar="REL_COST",
                   help="answer: most accurate configuration with relative cost <= REL_COST (e.g. 0.6), the "
                        "mean cost certified with confidence 1-DELTA, with a lower bound on its accuracy")
    p.add_argument("--risk", type=float_in(0.0, 0.5, low_open=True, what="a risk level in (0, 0.5]"),
                   metavar="DELTA",
                   help=f"risk level of the certificates, in (0, 0.5] (default {DEFAULT_DELTA}: 90%% confidence)")
    p.add_argument("--uncertified", action="store_true",
                   help="answer on the search split alone, without a certificate (promises nothing on unseen data)")
    p.add_argument("--show-uncertified", action="store_true",
                   help="also print the uncertified answer to --max-drop, for contrast")
    p.add_argument("--calibration-fraction", type=fraction, metavar="F",
                   help=f"without a calibration split in the cache: the share of the search split cut off "
                        f"(seeded by --seed) to certify on (default {DEFAULT_FRACTION})")
    p.add_argument("--bound", choices=tuple(BOUNDS), default=DEFAULT_BOUND,
                   help=f"the test behind a drop certificate (default {DEFAULT_BOUND}; docs/certification.md)")
    p.add_argument("--export", metavar="FILE.json", help="write the Pareto set (all methods) as exitconfig/1 JSON")
    p.add_argument("--export-choice", metavar="FILE.json",
                   help="write the configuration chosen by --max-drop/--budget alone (for deployment)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw every front on search and holdout (base and oracle marked); the exit "
                        "distribution of the chosen configuration goes to FILE_exits.png (any format matplotlib's "
                        "Agg backend writes: png, pdf, svg, ...)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing --export / --export-choice / --plot files (each is announced)")
    p.add_argument("--evaluations", type=positive_int, help="evaluation budget per method (population engines)")
    p.add_argument("--time-limit", type=positive_float, metavar="SECONDS", help="wall-time budget per method")
    p.add_argument("--seed", type=seed, default=0, help="random seed for stochastic methods (default 0)")
    p.add_argument("--storage", help="optuna storage URL or journal file (optuna method)")
    p.add_argument("--study-name", help="optuna study name (optuna method)")
    p.add_argument("--workers", type=positive_int, help="worker processes (optuna method)")
    p.add_argument("--sampler", help="optuna sampler: nsga2 (default, as Optuna's own multi-objective default), "
                                     "tpe (slow beyond a few thousand trials) or random")
    p.add_argument("--pop-size", type=int_at_least(2), help="population size (nsga2)")
    p.add_argument("--encoding", help="threshold encoding of population engines: float or quantile")
    p.add_argument("--subsample", type=positive_int, default=DEFAULT_SUBSAMPLE, metavar="N",
                   help="on a search split larger than --subsample-above, every method fits on a seeded random "
                        f"subsample of N samples (--seed) and its front is then scored exactly on all samples "
                        f"(default {DEFAULT_SUBSAMPLE})")
    p.add_argument("--subsample-above", type=non_negative_int, default=DEFAULT_SUBSAMPLE_ABOVE, metavar="N",
                   help=f"search splits up to N samples are fitted on every sample (default {DEFAULT_SUBSAMPLE_ABOVE})")
    p.add_argument("--chunk-size", type=positive_int, default=DEFAULT_CHUNK_SIZE, metavar="N",
                   help=f"samples read at a time when scoring on a whole split (bounds memory; default "
                        f"{DEFAULT_CHUNK_SIZE})")
    p.add_argument("--memory-limit", type=positive_float, default=DEFAULT_MEMORY_LIMIT_GB, metavar="GB",
                   help="refuse a fit whose arrays would need more memory than this, before reading anything "
                        f"(default {DEFAULT_MEMORY_LIMIT_GB:g})")
    p.add_argument("--standalone", action="store_true", help="also print every exit's accuracy and cost alone")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--skip-integrity-check", action="store_true",
                   help="skip the checksums and value scan of the cache (on by default, at every size)")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return p


def _engine(name: str, args) -> object:
    accepted = inspect.signature(engine_class(name).__init__).parameters
    opts = {k: getattr(args, k) for k in ENGINE_OPTIONS if k in accepted}
    return create_engine(name, **opts)


def _resolve_cache(path: str | None, *, skip_integrity_check: bool = False):
    if path is None:
        bundled = bundled_cache_path()
        if bundled is None:
            raise SearchError("no CACHE given and no cache is bundled in data_cache/bundled/; name a cache folder")
        path = bundled
    return open_cache(path, skip_integrity_check=skip_integrity_check)


def _fmt(x, spec=".4f") -> str:
    return "-" if x is None else format(x, spec)


def _table(rows: list[dict]) -> str:
    cols = [("method", "method", "<11", None), ("points", "points", ">6", None),
            ("HV search", "hv_search", ">9", ".4f"), ("HV holdout", "hv_holdout", ">10", ".4f"),
            ("IGD+", "igd", ">7", ".4f"),
            ("save@0.5%", "save05", ">9", ".1%"), ("save@1%", "save1", ">8", ".1%"),
            ("evals", "evals", ">10", None), ("seconds", "seconds", ">8", ".2f")]
    lines = ["  ".join(format(h, w) for h, _, w, _ in cols)]
    for r in rows:
        lines.append("  ".join(format(_fmt(r[k], f) if f else str(r[k]), w) for _, k, w, f in cols))
    return "\n".join(lines)


def _describe_choice(title: str, config, search, holdout) -> str:
    s, h = search.evaluate_one(config), holdout.evaluate_one(config)
    exits = ", ".join(f"{search.cache.exits[e].name}>{t:.4f}" for e, t in zip(config.exits, config.thresholds))
    return (f"{title}\n  exits: {exits or '(none: base model)'}\n"
            f"  search : accuracy {s.accuracy:.4%} (drop {search.base.accuracy - s.accuracy:+.3%}), "
            f"relative cost {s.relative_cost:.4f}\n"
            f"  holdout: accuracy {h.accuracy:.4%} (drop {holdout.base.accuracy - h.accuracy:+.3%}), "
            f"relative cost {h.relative_cost:.4f}")


def _run(args, out) -> int:
    if args.methods == "list":
        print("\n".join(list_engines()), file=out)
        return 0
    _check_args(args)
    outputs = _check_outputs(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise SearchError("--methods is empty; name at least one method (see --methods list)")
    engines = {m: _engine(m, args) for m in methods}
    cache = _resolve_cache(args.cache, skip_integrity_check=args.skip_integrity_check)
    warn_identical_splits(getattr(cache, "manifest", None) or {})
    sample = plan_fit(cache, "search", subsample=args.subsample, above=args.subsample_above, seed=args.seed)
    _check_certification(args, cache, sample)
    check_fit_memory(sample.size if sample else cache.n_samples("search"), len(cache.exits), methods,
                     args.memory_limit * 1e9)
    fit = fit_problem(cache, "search", sample, objective=args.objective, score=args.score,
                      chunk_size=args.chunk_size)
    search = (SplitEvaluator.of_problem(fit, chunk_size=args.chunk_size) if sample is None
              else SplitEvaluator.like(fit, "search", chunk_size=args.chunk_size))
    holdout = SplitEvaluator.like(fit, "holdout", chunk_size=args.chunk_size)
    fronts = _search(args, engines, fit)
    fit_union = _union(fronts)                               # on the problem the methods fitted on
    if sample is not None:
        fronts = _rescore(fronts, search, sample)
    entries = [(name, c) for name, f in fronts.items() for c in f.configs]
    union = _union(fronts)
    holdout.evaluations([c for _, c in entries])          # one pass over holdout for every front
    oracle = oracle_bound(search)
    _report(args, out, cache, fronts, union, search, holdout, oracle, sample)
    chosen = _answer_queries(args, out, fit, fit_union, search, holdout, union, entries)
    _write_outputs(args, out, outputs, fronts, entries, chosen, search, holdout, oracle, sample)
    return 0


def _union(fronts: dict[str, Front]) -> Front:
    """The non-dominated configurations of every method's front, as their own numbers say."""
    configs = [c for f in fronts.values() for c in f.configs]
    return Front(configs, np.concatenate([f.F for f in fronts.values()]), "union").pareto()


def _rescore(fronts: dict[str, Front], search: SplitEvaluator, sample: FitSample) -> dict[str, Front]:
    """Fronts fitted on a subsample, scored exactly on the whole search split (one pass for all) and
    kept non-dominated there."""
    search.evaluations([c for f in fronts.values() for c in f.configs])
    out = {}
    for name, f in fronts.items():
        exact = dataclasses.replace(f, F=search.evaluate(f.configs) if len(f) else np.zeros((0, 2))).pareto()
        note = (f"fitted on {sample.size:,} of {sample.of:,} samples; {len(exact)} of {len(f)} configurations "
                "non-dominated on all")
        out[name] = dataclasses.replace(exact, message="; ".join(m for m in (f.message, note) if m))
    return out


def _check_args(args) -> None:
    """Combinations of options that cannot work, refused before any work."""
    if args.uncertified and (args.risk is not None or args.calibration_fraction is not None):
        raise SearchError("--uncertified answers on the search split alone; drop --risk / --calibration-fraction")
    if args.max_drop is None and args.budget is None:
        given = [o for o, v in (("--risk", args.risk), ("--calibration-fraction", args.calibration_fraction),
                                ("--uncertified", args.uncertified or None),
                                ("--show-uncertified", args.show_uncertified or None)) if v is not None]
        if given:
            raise SearchError(f"{given[0]} needs --max-drop or --budget")
    if args.max_drop is not None:
        check_scalar(args.max_drop, "--max-drop", min_val=0.0, max_val=100.0)
    if args.risk is not None:
        check_delta(args.risk)
    if args.calibration_fraction is not None:
        check_fraction(args.calibration_fraction)
    if args.export_choice and args.max_drop is None and args.budget is None:
        raise SearchError("--export-choice needs --max-drop or --budget to choose a configuration")


def _exits_plot(path: Path) -> Path:
    """Where the exit distribution of the chosen configuration goes, beside the fronts' figure."""
    return path.with_name(path.stem + "_exits" + path.suffix)


def _check_outputs(args) -> dict[str, Path]:
    """Every file the run will write, checked before any work (``docs/outputs.md``)."""
    plot_exits = None
    if args.plot and (args.max_drop is not None or args.budget is not None):
        plot_exits = _exits_plot(Path(args.plot))
    return check_outputs([("--export", args.export), ("--export-choice", args.export_choice),
                          ("--plot", args.plot), ("--plot (exit distribution)", plot_exits)],
                         overwrite=args.overwrite,
                         suffixes={"--export": (".json",), "--export-choice": (".json",), "--plot": PLOT_SUFFIXES})


def _check_certification(args, cache, sample: FitSample | None) -> None:
    """Before any search: the calibration data can serve (neither it nor the fit part empty), and can certify
    the asked drop at all; ``sample``: the subsample the methods will fit on."""
    if args.uncertified or (args.max_drop is None and args.budget is None):
        return
    check_calibration_split(cache)
    if CALIBRATION_SPLIT in cache.splits() and args.calibration_fraction is not None:
        raise SearchError(f"the cache has a calibration split ({cache.n_samples(CALIBRATION_SPLIT)} samples): it is the "
                          "calibration set; --calibration-fraction only cuts a search split when there is none")
    n_cal = planned_calibration_size(cache, _fraction(args), None if sample is None else sample.size)
    if args.max_drop is not None:
        check_certifiable(args.max_drop / 100, n_cal, _delta(args), args.bound)


def _delta(args) -> float:
    return DEFAULT_DELTA if args.risk is None else args.risk


def _fraction(args) -> float:
    return DEFAULT_FRACTION if args.calibration_fraction is None else args.calibration_fraction


def _search(args, engines: dict, problem: ExitProblem) -> dict[str, Front]:
    """Run every engine on ``problem``, with a progress bar on a terminal; warnings as one line each."""
    budget = Budget(max_evals=args.evaluations, max_seconds=args.time_limit)
    fronts: dict[str, Front] = {}
    with _progress(len(engines), disable=args.no_progress or not sys.stderr.isatty()) as bar, _warning_lines():
        for name, engine in engines.items():
            bar.set_postfix_str(name)
            fronts[name] = engine.run(problem, budget=budget, seed=args.seed,
                                      callback=lambda eng, prob, name=name: bar.set_postfix_str(
                                          f"{name}: {prob.n_evals} evaluations", refresh=True))
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


@contextlib.contextmanager
def _warning_lines():
    """Warnings raised meanwhile (e.g. a sampler asked for more trials than it handles) print as
    ``warning: ...`` on stderr, one line each."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", SearchWarning)
        warnings.showwarning = show
        yield


def _report(args, out, cache, fronts: dict[str, Front], union: Front, search: SplitEvaluator,
            holdout: SplitEvaluator, oracle, sample: FitSample | None) -> None:
    """The header, the table of methods and (with --standalone) every exit alone."""
    hv, rows = HV(), []
    best_known = IGDPlus(union.F) if len(union) else None
    for name, front in fronts.items():
        Fh = holdout.evaluate(front.configs) if len(front) else np.zeros((0, 2))
        rows.append({"method": name, "points": len(front), "hv_search": hv(front.F), "hv_holdout": hv(Fh),
                     "igd": best_known(front.F) if best_known and len(front) else None,
                     "save05": saving_at_drop(Fh, holdout.base.accuracy, 0.005),
                     "save1": saving_at_drop(Fh, holdout.base.accuracy, 0.01),
                     "evals": front.n_evals, "seconds": front.exec_time})
    print(f"cache {cache.fingerprint[:19]}  exits {len(cache.exits)}  search {search.n_samples}  "
          f"holdout {holdout.n_samples}  objective {args.objective}  score {args.score}", file=out)
    if sample is not None:
        print(f"fit: every method fitted on a seeded random subsample of {sample.size:,} of the {sample.of:,} "
              f"search samples (--seed {sample.seed}); every number below is scored on all samples", file=out)
    print(f"base: search accuracy {search.base.accuracy:.4%}, holdout {holdout.base.accuracy:.4%}; "
          f"oracle bound (search): accuracy {oracle[0]:.4%} at relative cost {oracle[1]:.4f}", file=out)
    print(_table(rows), file=out)
    print("HV: hypervolume of [error, relative cost] against the fixed reference point (1, 1); IGD+: distance "
          "to the best known front (the union of all methods' fronts) on search; save@X: cost saved by the "
          "cheapest front configuration within X of the base accuracy, on holdout.", file=out)
    if args.standalone:
        print("\nstandalone (search split):", file=out)
        for r in standalone_table(search):
            print(f"  {r['name']:<40} pos {r['position']:>3}  accuracy {r['accuracy']:.4f}  "
                  f"relative cost {r['relative_cost']:.4f}", file=out)


def _answer_queries(args, out, fit: ExitProblem, fit_union: Front, search: SplitEvaluator,
                    holdout: SplitEvaluator, union: Front, entries: list):
    """Answer --max-drop / --budget (certified unless --uncertified); report each answer's exact numbers
    on both whole splits; append it to ``entries`` (with its certificate); return the configuration chosen.

    ``fit`` is the problem the methods fitted on (the search split, or its subsample) and ``fit_union``
    their front on it; ``union`` is the front on all of search. Certified answers take their candidates
    from ``fit`` alone and test them on calibration data it never saw (``search.calibration``).
    """
    if args.max_drop is None and args.budget is None:
        return None
    from . import queries                                    # scipy: only when a query is asked

    chosen = None
    roles = None if args.uncertified else calibration_roles(fit, fraction=_fraction(args), seed=args.seed)
    on = "the whole search split" if fit.samples is None else f"the fitted subsample of search ({fit.n_samples:,} samples)"
    if args.max_drop is not None:
        drop = args.max_drop / 100
        if args.uncertified:
            chosen = _uncertified_drop(queries, fit, fit_union, search, union, drop)
            entries.append(("query", chosen))
            print(_describe_choice(f"\nuncertified: cheapest within {args.max_drop} points of the base accuracy on "
                                   f"{on} (no guarantee on unseen data):", chosen, search, holdout), file=out)
        else:
            cert = certify_drop(roles, drop, delta=_delta(args), bound=args.bound, fit_front=fit_front(roles, fit_union))
            chosen = cert.config
            entries.append(("query", chosen, cert.certificate.to_json()) if cert.certificate else ("query", chosen))
            print(_describe_choice(drop_title(cert, args.max_drop, _delta(args)), chosen, search, holdout), file=out)
            if args.show_uncertified:
                loose = _uncertified_drop(queries, fit, fit_union, search, union, drop)
                print(_describe_choice(f"for contrast, uncertified (chosen on {on}, no guarantee on unseen data):",
                                       loose, search, holdout), file=out)
    if args.budget is not None:
        if args.uncertified:
            config = queries.most_accurate_within_budget(fit, args.budget, front=fit_union).config
            if fit.samples is not None:
                config = _best_on_all(search, [config, *union.configs],
                                      lambda e: e.relative_cost <= args.budget * (1 + 1e-12),
                                      lambda e: (e.error, e.relative_cost)) or config
            entries.append(("query", config))
            title = f"\nuncertified: most accurate within relative cost {args.budget} on {on}:"
        else:
            cert = certify_budget(roles, args.budget, delta=_delta(args), fit_front=fit_front(roles, fit_union))
            if cert.certificate is None:
                raise SearchError(budget_failure(cert, args.budget, _delta(args)))
            config = cert.config
            entries.append(("query", config, cert.certificate.to_json()))
            title = budget_title(cert, args.budget, _delta(args))
        chosen = chosen or config
        print(_describe_choice(title, config, search, holdout), file=out)
    return chosen


def _uncertified_drop(queries, fit: ExitProblem, fit_union: Front, search: SplitEvaluator, union: Front,
                      drop: float) -> ExitConfig:
    """Today's answer: the cheapest within ``drop`` on the fit problem; on a subsample, the best of it and
    the fronts that meets the limit on all search samples (a subsample's answer alone overfits)."""
    config = queries.cheapest_within_drop(fit, drop, front=fit_union).config
    if fit.samples is None:
        return config
    return _best_on_all(search, [config, *union.configs, ExitConfig(score=fit.score)],
                        lambda e: search.base.accuracy - e.accuracy <= drop + 1e-12,
                        lambda e: (e.relative_cost, e.error))


def _best_on_all(search: SplitEvaluator, candidates: list, meets, key):
    """Of ``candidates``, the best by ``key`` that ``meets`` the limit on every search sample (None if
    none does). A query answered on a subsample holds there only; its exact numbers on the whole split
    decide."""
    evaluations = search.evaluations(candidates)
    ok = [(key(e), i) for i, e in enumerate(evaluations) if meets(e)]
    return candidates[min(ok)[1]] if ok else None


def _write_outputs(args, out, outputs: dict[str, Path], fronts: dict[str, Front], entries: list, chosen,
                   search: SplitEvaluator, holdout: SplitEvaluator, oracle, sample: FitSample | None) -> None:
    """--export, --export-choice and --plot, checked before the search (``outputs``); every file is written to a
    temporary file first and none replaces its target unless all were written."""
    fit = {"split": "search", **(sample.to_json() if sample else {"subsample": None, "of": search.n_samples,
                                                                   "seed": None})}
    method_info = {name: {"engine": {"name": name, "params": f.params}, "n_evals": f.n_evals,
                          "seconds": f.exec_time, "message": f.message} for name, f in fronts.items()}
    docs = {}
    if args.export:
        docs["--export"] = build_export(entries, search=search, holdout=holdout, method_info=method_info, fit=fit)
    if args.export_choice:
        entry = next(e for e in reversed(entries) if e[1] == chosen)
        docs["--export-choice"] = build_export([entry], search=search, holdout=holdout, method_info=method_info,
                                               pareto=False, fit=fit)
    targets = [(option, outputs[option]) for option in docs]
    if args.plot:
        targets.append(("--plot", outputs["--plot"]))
        if chosen is not None:
            targets.append(("--plot (exit distribution)", outputs["--plot (exit distribution)"]))
    with atomic_outputs(targets) as tmps:
        files = dict(zip((option for option, _ in targets), tmps))
        for option, doc in docs.items():
            write_export(files[option], doc)
        if args.plot:
            _plots(files["--plot"], files.get("--plot (exit distribution)"), Path(args.plot).suffix, fronts, search,
                   holdout, oracle, _marks(args, entries), args.max_drop)
    if args.export:
        print(f"\nexported {len(docs['--export']['configs'])} configurations to {args.export}", file=out)
    if args.export_choice:
        print(f"exported the chosen configuration to {args.export_choice}", file=out)
    if args.plot:
        also = f" and {outputs['--plot (exit distribution)']}" if chosen is not None else ""
        print(f"plots written to {args.plot}{also}", file=out)


FOCUS_POINTS = 5.0   # with a query answered, the fronts' figure shows this many points below the base (or more)


def _marks(args, entries: list) -> list[tuple[str, ExitConfig]]:
    """The configurations the queries chose, each labelled with its query and whether it is certified."""
    asked = ([f"within {args.max_drop:g} points"] if args.max_drop is not None else []) + \
            ([f"relative cost <= {args.budget:g}"] if args.budget is not None else [])
    chosen = [e for e in entries if e[0] == "query"]
    return [(f"chosen: {what}, {'certified' if len(e) > 2 else 'not certified'}", e[1]) for what, e in zip(asked, chosen)]


def _plots(path: Path, exits_path: Path | None, suffix: str, fronts, search, holdout, oracle, marks,
           asked_drop) -> None:
    """The fronts' figure to ``path`` (the ``marks``, ``(label, config)``, and the asked-drop line on both splits)
    and the first marked configuration's exits to ``exits_path``, in the format ``suffix`` names (the paths are
    temporary files)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from .plot import plot_exit_distribution, plot_fronts

    fmt = suffix.lower().lstrip(".")
    fig = Figure(figsize=(12, 4.8))
    ax_s, ax_h = fig.subplots(1, 2, sharey=True)
    limits = []
    focus = max(FOCUS_POINTS, 10 * (asked_drop or 0.0)) if marks else None   # a query: the band near the base
    for ax, split, title, front_of in ((ax_s, search, "search split", None),
                                       (ax_h, holdout, "holdout split (same configurations)", holdout)):
        shown = {m: f if front_of is None else Front(f.configs, front_of.evaluate(f.configs), m)
                 for m, f in fronts.items() if len(f)}
        points = {label: (e.accuracy, e.relative_cost)
                  for (label, _), e in zip(marks, split.evaluations([c for _, c in marks]))}
        plot_fronts(shown, base=(split.base.accuracy, 1.0), oracle=oracle if front_of is None else None,
                    chosen=points, asked_drop=asked_drop, focus_drop=focus, title=title, ax=ax)
        limits.append(ax.get_ylim())
    ax_s.set_ylim(min(lo for lo, _ in limits), max(hi for _, hi in limits))   # shared: both panels' points
    fig.tight_layout()
    fig.savefig(path, dpi=120, format=fmt)
    if marks and exits_path is not None:
        label, config = marks[0]
        plot_exit_distribution(holdout, config, label=label).savefig(exits_path, dpi=150, format=fmt)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args, sys.stdout)
    except (CacheError, SearchError, OutputError) as exc:
        if args.debug:
            raise
        for line in getattr(exc, "problems", None) or [str(exc)]:
            print(f"error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli_entry(main))
