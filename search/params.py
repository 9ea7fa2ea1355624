"""The parameters of a search, declared once: name, type, range, default and meaning.

``PARAMS`` is the one table. :func:`search.search` checks its keyword arguments against it once
(:func:`check_options`: a SearchError of one line naming the parameter); ``python -m search.pareto``
derives its options from it (:func:`add_arguments`: argparse ``type=``, ``choices``, ``default`` and
``help``), so a value the command line refuses is refused by the library in the same words, and a
value argparse accepted is not checked again (:func:`options_from_args`). Nothing behind the boundary
re-checks an option (scikit-learn's ``_param_validation`` is the model).
"""

from __future__ import annotations

import argparse
from typing import Any

from ._param import Param
from ._validation import SearchError
from .calibration import DEFAULT_FRACTION
from .certify import BOUNDS, DEFAULT_BOUND
from .chunks import DEFAULT_CHUNK_SIZE
from .costs import list_cost_models
from .engines import engine_class
from .pareto_testing import DEFAULT_DELTA
from .scores import score_kinds
from .subsample import DEFAULT_SUBSAMPLE, DEFAULT_SUBSAMPLE_ABOVE

__all__ = [
    "Param",
    "PARAMS",
    "Options",
    "check_options",
    "options_from_args",
    "add_arguments",
    "DEFAULT_METHODS",
    "DEFAULT_MEMORY_LIMIT_GB",
    "ENGINE_OPTIONS",
]

DEFAULT_METHODS = "dp,global,geometric,greedy"
DEFAULT_MEMORY_LIMIT_GB = 8.0
# options a search may hand to an engine; each engine receives those its constructor accepts
ENGINE_OPTIONS = ("storage", "study_name", "workers", "sampler", "pop_size", "encoding")


def _float(name, what, help, low=None, high=None, **kw) -> Param:
    return Param(name, "float", help, low=low, high=high, what=what, **kw)


_POSITIVE = dict(low=0.0, low_open=True)
_GT0 = "a finite number > 0"

_TABLE = [
    Param(
        "methods",
        "names",
        f"comma-separated search methods (default {DEFAULT_METHODS}); 'list' prints them all",
        DEFAULT_METHODS,
    ),
    Param(
        "objective",
        "choice",
        "cost model (contract/costs/): counted MACs, measured latency if the cache has it, "
        "units (each segment or head costs 1), or time (predicted ms per sample from --cost-table) (default macs)",
        "macs",
        choices=tuple(list_cost_models()),
    ),
    Param(
        "cost_table",
        "text",
        "with --objective time: the measured table CACHE/cost_tables/NAME.json (python -m "
        "exits.profile) the time is predicted from",
        metavar="NAME",
    ),
    Param(
        "batch_size",
        "int",
        "with --objective time: the batch size the time is predicted at (default: the "
        "table's; within its grid)",
        low=1,
        what="a positive integer",
        metavar="B",
    ),
    Param(
        "rebatch",
        "flag",
        "with --objective time: predict re-batched serving (survivors of several batches gathered so that "
        "every segment runs full batches: ExitRuntime.run_batches(..., rebatch=True), exits.validate "
        "--rebatch); the time is then additive at any batch size, so dp is exact and a budget can be "
        "certified",
        False,
    ),
    Param(
        "score",
        "choice",
        "confidence score compared with thresholds (default max_prob)",
        "max_prob",
        choices=tuple(score_kinds()),
    ),
    Param(
        "rules",
        "names",
        "exit rules dp may choose per exit, each with its threshold: a comma list of rule "
        "names, or 'auto' for every rule this cache can serve but the learned 'gate' and 'partner_gate' "
        "(name them to add them: fitted per exit on the fit rows only) (default: --score alone; the other "
        "methods use --score)",
        None,
        metavar="RULES",
    ),
    Param(
        "max_drop",
        "points",
        "answer: cheapest configuration within POINTS percentage points of the base top-1 "
        "accuracy (e.g. 0.5; 0, or 0.05 to 20: search/units.py), certified on calibration data with confidence "
        "1-DELTA (--risk)",
        metavar="POINTS",
    ),
    _float(
        "budget",
        _GT0,
        "answer: most accurate configuration with relative cost <= REL_COST (e.g. 0.6), the mean "
        "cost certified with confidence 1-DELTA, with a lower bound on its accuracy",
        metavar="REL_COST",
        **_POSITIVE,
    ),
    _float(
        "risk",
        "a risk level in (0, 0.5]",
        f"risk level of the certificates, in (0, 0.5] (default {DEFAULT_DELTA}: 90%% confidence)",
        0.0,
        0.5,
        low_open=True,
        metavar="DELTA",
    ),
    Param(
        "uncertified",
        "flag",
        "answer on the search split alone, without a certificate (promises nothing on unseen data)",
        False,
    ),
    Param(
        "show_uncertified",
        "flag",
        "also print the uncertified answer to --max-drop, for contrast",
        False,
    ),
    _float(
        "calibration_fraction",
        "a fraction in (0, 1)",
        "without a calibration split in the cache: the share of "
        f"the search split cut off (seeded by --seed) to certify on (default {DEFAULT_FRACTION})",
        0.0,
        1.0,
        low_open=True,
        high_open=True,
        metavar="F",
    ),
    Param(
        "bound",
        "choice",
        f"the test behind a drop certificate (default {DEFAULT_BOUND}; docs/certification.md)",
        DEFAULT_BOUND,
        choices=tuple(BOUNDS),
    ),
    Param(
        "max_exits",
        "int",
        "enable at most K exits per configuration, in the search and in every answer (each "
        "enabled exit adds a head and a step; dp searches under the cap exactly, other methods' configurations keep "
        "the K exits that serve the most samples)",
        low=1,
        what="a positive integer",
        metavar="K",
    ),
    Param(
        "evaluations",
        "int",
        "evaluation budget per method (population engines)",
        low=1,
        what="a positive integer",
    ),
    _float("time_limit", _GT0, "wall-time budget per method", metavar="SECONDS", **_POSITIVE),
    Param(
        "seed",
        "int",
        "random seed for stochastic methods (default 0)",
        0,
        low=0,
        high=2**32 - 1,
        what=f"a random seed in [0, {2**32 - 1}]",
    ),
    Param("storage", "text", "optuna storage URL or journal file (optuna method)"),
    Param("study_name", "text", "optuna study name (optuna method)"),
    Param("workers", "int", "worker processes (optuna method)", low=1, what="a positive integer"),
    Param(
        "sampler",
        "text",
        "optuna sampler: nsga2 (default, as Optuna's own multi-objective default), tpe (slow "
        "beyond a few thousand trials) or random",
    ),
    Param("pop_size", "int", "population size (nsga2)", low=2, what="an integer >= 2"),
    Param("encoding", "text", "threshold encoding of population engines: float or quantile"),
    Param(
        "subsample",
        "int",
        "on a search split larger than --subsample-above, every method fits on a seeded "
        "random subsample of N samples (--seed) and its front is then scored exactly on all samples (default "
        f"{DEFAULT_SUBSAMPLE})",
        DEFAULT_SUBSAMPLE,
        low=1,
        what="a positive integer",
        metavar="N",
    ),
    Param(
        "subsample_above",
        "int",
        f"search splits up to N samples are fitted on every sample (default "
        f"{DEFAULT_SUBSAMPLE_ABOVE})",
        DEFAULT_SUBSAMPLE_ABOVE,
        low=0,
        what="a non-negative integer",
        metavar="N",
    ),
    Param(
        "chunk_size",
        "int",
        "samples read at a time when scoring on a whole split (bounds memory; default "
        f"{DEFAULT_CHUNK_SIZE})",
        DEFAULT_CHUNK_SIZE,
        low=1,
        what="a positive integer",
        metavar="N",
    ),
    _float(
        "memory_limit",
        _GT0,
        "refuse a fit whose arrays would need more memory than this, before reading "
        f"anything (default {DEFAULT_MEMORY_LIMIT_GB:g})",
        default=DEFAULT_MEMORY_LIMIT_GB,
        metavar="GB",
        **_POSITIVE,
    ),
    Param(
        "skip_integrity_check",
        "flag",
        "skip the checksums and value scan of the cache (on by default, at every size)",
        False,
    ),
    Param("progress", "flag", "a progress bar on stderr while the methods run", False, cli=False),
]
PARAMS: dict[str, Param] = {p.name: p for p in _TABLE}


class Options:
    """The checked parameters of one search, by attribute (``opts.max_drop``); every name of ``PARAMS``.

    Built by :func:`check_options` (keyword arguments) or :func:`options_from_args` (a parsed command line);
    ``methods`` is a tuple of registered engine names; ``labels`` names parameters in messages."""

    def __init__(self, values: dict[str, Any], *, cli: bool):
        self._values = values
        self.cli = cli

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def label(self, name: str) -> str:
        """How a message names the parameter: its option on the command line, its keyword in a call."""
        return PARAMS[name].flag if self.cli else name

    def engine_options(self) -> dict[str, Any]:
        return {k: self._values[k] for k in ENGINE_OPTIONS}

    def __repr__(self) -> str:
        return f"Options({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"


def check_options(params: dict[str, Any]) -> Options:
    """Keyword arguments of :func:`search.search` checked once against ``PARAMS`` (defaults filled in)."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise SearchError(
            f"unknown parameter {unknown[0]!r}; the parameters are {', '.join(PARAMS)}"
        )
    values = {
        name: p.check(params[name]) if name in params else p.default for name, p in PARAMS.items()
    }
    return _combined(values, cli=False)


def options_from_args(args: argparse.Namespace) -> Options:
    """The parameters of a parsed command line; argparse checked each with the types of :func:`add_arguments`."""
    values = {name: getattr(args, name, p.default) for name, p in PARAMS.items()}
    return _combined(values, cli=True)


def _combined(values: dict[str, Any], *, cli: bool) -> Options:
    """The methods resolved against the registry, and combinations of parameters that cannot work refused."""
    opts = Options(values, cli=cli)
    label = opts.label
    methods = values["methods"]
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    names = [m for m in names if m]
    if not names:
        raise SearchError(
            f"{label('methods')} is empty; name at least one method (see --methods list)"
        )
    for m in names:
        engine_class(m)  # an unknown name: SearchError listing the known ones
    values["methods"] = tuple(names)
    if values["uncertified"] and (
        values["risk"] is not None or values["calibration_fraction"] is not None
    ):
        raise SearchError(
            f"{label('uncertified')} answers on the search split alone; drop {label('risk')} / "
            f"{label('calibration_fraction')}"
        )
    if values["max_drop"] is None and values["budget"] is None:
        for name in ("risk", "calibration_fraction", "uncertified", "show_uncertified"):
            if values[name] not in (None, False):
                raise SearchError(f"{label(name)} needs {label('max_drop')} or {label('budget')}")
    if values["objective"] == "time" and values["cost_table"] is None:
        raise SearchError(
            f"{label('objective')} time needs {label('cost_table')} NAME: a table measured by python -m "
            "exits.profile (CACHE/cost_tables/NAME.json)"
        )
    for name in ("cost_table", "batch_size", "rebatch"):
        if values["objective"] != "time" and values[name] not in (None, False):
            raise SearchError(f"{label(name)} serves {label('objective')} time only")
    values["risk"] = DEFAULT_DELTA if values["risk"] is None else values["risk"]
    return opts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every command-line parameter of ``PARAMS`` as an option of ``parser``."""
    for p in _TABLE:
        if not p.cli:
            continue
        if p.kind == "flag":
            parser.add_argument(p.flag, action="store_true", help=p.help)
            continue
        kw: dict[str, Any] = {"default": p.default, "help": p.help}
        if p.kind == "choice":
            kw["choices"] = p.choices
        if p.parser_type() is not None:
            kw["type"] = p.parser_type()
        if p.metavar:
            kw["metavar"] = p.metavar
        parser.add_argument(p.flag, **kw)
