"""Recompute, don't trust: an ``exitconfig/1`` document checked against the cache it was searched on.

The one verification path of every consumer that has the cache at hand (``exits.validate``,
``ExitRuntime(cache=...)`` and its ``select``, ``exits.export_bundle``, ``exits.validate_bundle``):

- every configuration's numbers (``accuracy``, ``relative_cost``, ``cost``, ``exit_fractions`` on each split it
  records) and the base figures are recomputed exactly (``search.exact.SplitEvaluator``: one streamed pass per
  split and score kind for the whole table);
- every certificate's test is re-run on the calibration rows it records (the cache's ``calibration`` split in
  the seeded order it was tested in, or the seeded cut of the search split, outside the fitted subsample the
  ``fit`` field records; ``search.calibration.recorded_calibration``) with ``search.pareto_testing.retest``:
  it must pass at its ``delta`` and give the ``n_cal``, p-value, observed drop or cost and accuracy bound
  recorded;
- the calibration rows must be independent of the fit rows by content (``search.overlap``), whatever
  ``sample_index`` or the provenance say; a holdout repeating them is a warning.

A number or certificate that does not reproduce is a :class:`SearchError` in one line naming the configuration
(index and id) and the field. ``tested`` and ``sequence`` (the walk that chose the configuration) are taken as
recorded: re-running the walk means re-running the search; the accuracy bound is recomputed from them.
Without the cache nothing can be recomputed: consumers then say so in one line (:data:`UNVERIFIED`).
Numpy only; never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_cache._base import CacheReader

from ._validation import SearchError
from .calibration import (
    CALIBRATION_SPLIT,
    check_calibration_split,
    holdout_warnings,
    material,
    recorded_calibration,
)
from .chunks import DEFAULT_CHUNK_SIZE
from .config import ExitConfig
from .costs import CostTable, cost_table
from .exact import SplitEvaluator
from .export import check_export_cache, export_configs
from .export_schema import export_problems
from .learned import Params, config_params, group_by_params, params_key
from .overlap import Overlap, repeated_rows, row_hashes
from .pareto_testing import retest
from .problem import ExitProblem
from .subsample import FitSample
from .time_objective import load_time_costs

__all__ = ["Verification", "verify_export", "UNVERIFIED", "NUMBER_TOLERANCE"]

NUMBER_TOLERANCE = (
    1e-9  # relative (and absolute, near 0): the recorded numbers are the same exact computation
)
_P_TOLERANCE = (
    1e-6  # relative, for p-values and bounds (special functions may differ in the last bits)
)
UNVERIFIED = (
    "the configuration file's numbers and certificates are unverified: without the cache it was "
    "searched on they cannot be recomputed"
)


@dataclass(frozen=True)
class Verification:
    """What :func:`verify_export` recomputed, and the warning lines it has for the user."""

    n_configs: int
    n_certificates: int
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        return (
            f"verified: the numbers of {self.n_configs} configuration(s) and {self.n_certificates} "
            "certificate(s) recomputed from the cache"
        )


def _close(recorded, value, tolerance: float = NUMBER_TOLERANCE) -> bool:
    a, b = (
        np.atleast_1d(np.asarray(recorded, dtype=np.float64)),
        np.atleast_1d(np.asarray(value, dtype=np.float64)),
    )
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=tolerance, atol=tolerance))


def _text(x) -> str:
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_text(v) for v in x) + "]"
    return f"{x:.10g}" if isinstance(x, float) else repr(x)


def _compare(
    recorded: dict, computed: dict, where: str, tolerance: float = NUMBER_TOLERANCE
) -> None:
    """SearchError naming the first field of ``recorded`` that ``computed`` does not reproduce."""
    for key, value in computed.items():
        if key in recorded and not _close(recorded[key], value, tolerance):
            raise SearchError(
                f"{where}.{key}: {_text(recorded[key])} does not reproduce: the cache gives "
                f"{_text(value)}"
            )


@dataclass
class _Context:
    """What one verification reads once: evaluators per (split, rules), calibration problems per record."""

    doc: dict
    cache: CacheReader
    costs: CostTable
    source: str
    chunk_size: int
    evaluators: dict = field(default_factory=dict)
    calibrations: dict = field(default_factory=dict)

    def evaluator(
        self, split: str, rules: tuple[str, ...], params: Params | None = None
    ) -> SplitEvaluator:
        """An evaluator of ``split`` scoring ``rules`` (the first one the configurations' ``score``), learned ones
        with the ``params`` the configurations carry."""
        key = (split, rules, params_key(params))
        if key not in self.evaluators:
            self.evaluators[key] = SplitEvaluator(
                self.cache,
                split,
                costs=self.costs,
                score=rules[0],
                rules=rules,
                objective=self.costs.objective,
                chunk_size=self.chunk_size,
                params=params,
            )
        return self.evaluators[key]

    def fitted(self) -> np.ndarray | None:
        """The sorted rows of the subsample the search fitted on (the ``fit`` record), None for the whole split."""
        fit = self.doc.get("fit") or {}
        if fit.get("subsample") is None:
            return None
        n = self.cache.n_samples("search")
        if fit.get("of") != n:
            raise SearchError(
                f"{self.source}: fit.of: {fit.get('of')!r} does not reproduce: the cache's search "
                f"split has {n} rows"
            )
        return FitSample(fit["subsample"], n, fit["seed"]).indices()

    def calibration(
        self, cert: dict, rules: tuple[str, ...], params: Params
    ) -> tuple[ExitProblem, np.ndarray | None]:
        key = (cert["split"], cert.get("fraction"), cert["seed"], rules, params_key(params))
        if key not in self.calibrations:
            self.calibrations[key] = recorded_calibration(
                self.cache,
                cert["split"],
                cert.get("fraction"),
                cert["seed"],
                score=rules[0],
                costs=self.costs,
                rules=rules,
                params=params,
                fitted=self.fitted() if cert["split"] == "search" else None,
            )
        return self.calibrations[key]


def _groups(todo: list[tuple[int, ExitConfig]]):
    """``(rules, params, [(i, config)])``: configurations evaluated together, one streamed pass per group (same
    rules, learned params that agree at every exit: one group per rule set for a table of one search)."""
    for rules in sorted({c.rule_set for _, c in todo}):
        group = [(i, c) for i, c in todo if c.rule_set == rules]
        for params, members in group_by_params([c for _, c in group]):
            yield rules, params, [group[m] for m in members]


def _check_numbers(ctx: _Context, configs: list[tuple[str, ExitConfig]]) -> None:
    """Every configuration's recorded numbers on each split, and the base figures, against the cache."""
    entries = ctx.doc["configs"]
    for split in ("search", "holdout"):
        todo = [
            (i, c)
            for i, (entry, (_, c)) in enumerate(zip(entries, configs, strict=True))
            if split in entry
        ]
        if (todo or split in (ctx.doc.get("base") or {})) and split not in ctx.cache.splits():
            raise SearchError(
                f"{ctx.source}: {split}: the cache has no {split!r} split to recompute it on"
            )
        for rules, params, group in _groups(todo):
            evaluations = ctx.evaluator(split, rules, params).evaluations([c for _, c in group])
            for (i, _), ev in zip(group, evaluations, strict=True):
                where = f"{ctx.source}: configs[{i}] (id {configs[i][0]!r}): {split}"
                computed = {
                    "accuracy": ev.accuracy,
                    "relative_cost": ev.relative_cost,
                    "cost": ev.cost,
                    "exit_fractions": list(ev.exit_fractions),
                }
                if ctx.costs.objective == "time":
                    computed.update(
                        time_per_sample_ms=ev.cost, predicted_speedup=1.0 / ev.relative_cost
                    )
                _compare(entries[i][split], computed, where)
        base = (ctx.doc.get("base") or {}).get(split)
        if base is not None:
            ev = ctx.evaluator(split, (ctx.doc.get("score", "max_prob"),)).base
            _compare(
                base,
                {"accuracy": ev.accuracy, "cost": ev.cost, "relative_cost": 1.0},
                f"{ctx.source}: base.{split}",
            )
    sizes = (ctx.doc.get("cache") or {}).get("splits")
    if isinstance(sizes, dict):
        for split, n in sizes.items():
            if split in ctx.cache.splits() and n != ctx.cache.n_samples(split):
                raise SearchError(
                    f"{ctx.source}: cache.splits.{split}: {n!r} does not reproduce: the cache's "
                    f"{split} split has {ctx.cache.n_samples(split)} rows"
                )


def _independence(
    ctx: _Context, cert: dict, fit_rows: np.ndarray | None, cal: ExitProblem
) -> list[str]:
    """Refuse calibration rows that repeat the fit rows by content; warning lines for lesser overlaps."""
    if cert["split"] == CALIBRATION_SPLIT:
        return check_calibration_split(ctx.cache)
    hashes = row_hashes(ctx.cache, "search")
    overlap = Overlap(
        "calibration (cut from search)",
        "the fit part of search",
        cal.n_samples,
        repeated_rows(hashes[cal.samples], hashes[fit_rows]),
    )
    if material(overlap):
        raise SearchError(f"{overlap.describe()}; calibration data must be unseen by the search")
    return holdout_warnings(ctx.cache, "search", cal.samples, "calibration (cut from search)")


def _check_certificate(ctx: _Context, i: int, cid: str, config: ExitConfig) -> list[str]:
    """Re-run configuration ``i``'s certificate on its recorded calibration rows; its warning lines."""
    cert = ctx.doc["configs"][i]["certificate"]
    where = f"{ctx.source}: configs[{i}] (id {cid!r}): certificate"
    try:
        cal, fit_rows = ctx.calibration(cert, config.rule_set, config_params([config]))
        warnings = _independence(ctx, cert, fit_rows, cal)
    except SearchError as exc:
        raise SearchError(f"{where}.split: {exc}") from None
    got = retest(cal, config, cert)
    rows = (
        f"the {got['n_cal']} recorded calibration rows ({cert['split']} split, seed {cert['seed']})"
    )
    if cert["n_cal"] != got["n_cal"]:
        raise SearchError(f"{where}.n_cal: {cert['n_cal']!r} does not reproduce: {rows}")
    if not got["certified"]:
        limit = "certified_drop" if cert["kind"] == "drop" else "certified_relative_cost"
        observed = got.get("observed_drop", got.get("observed_relative_cost"))
        raise SearchError(
            f"{where}.{limit}: {_text(cert[limit])} does not reproduce: the {cert['bound']} test on "
            f"{rows} gives p = {got['p_value']:.4g} > {_level_text(cert)} (observed "
            f"{cert['kind']} {observed:.6g})"
        )
    _compare(cert, {k: v for k, v in got.items() if k.startswith("observed")}, where)
    _compare(
        cert,
        {k: v for k, v in got.items() if k in ("p_value", "accuracy_lower_bound")},
        where,
        _P_TOLERANCE,
    )
    return warnings


def _level_text(cert: dict) -> str:
    """The level a certificate's test must pass: delta, or a fallback walk's share of it."""
    if "level" in cert:
        return f"level {cert['level']:.4g} (fallback share of delta {cert['delta']:g})"
    return f"delta {cert['delta']:g}"


def _costs(doc: dict, cache) -> CostTable:
    """The export's cost table recomputed from the cache; under ``time``, the table it records read beside the
    cache (checked against it) at the recorded batch size, and the same table by content (fingerprint)."""
    objective = doc.get("objective", "macs")
    if objective != "time":
        return cost_table(cache, objective)
    rec = doc["cost_table"]
    if rec["method"] != "binomial":
        raise SearchError(
            f"cost_table.method: {rec['method']!r}; this version predicts a search's time with "
            "'binomial'"
        )
    try:
        costs = load_time_costs(
            cache, rec["name"], rec["batch_size"], rebatch=bool(rec.get("rebatch", False))
        )
    except SearchError as exc:
        raise SearchError(f"cost_table.name: {exc}") from None
    if costs.model.table.fingerprint != rec["fingerprint"]:
        raise SearchError(
            f"cost_table.fingerprint: {rec['fingerprint'][:19]}... is not the table "
            f"{rec['name']!r} beside the cache ({costs.model.table.fingerprint[:19]}...): it was "
            "profiled again or replaced since the search"
        )
    return costs


def verify_export(
    doc: dict, cache, *, source: str = "configuration", chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Verification:
    """Recompute ``doc``'s numbers and re-run its certificates on ``cache`` (the module docstring); a
    SearchError in one line (``source: configs[i] (id ...): field: ...``) on the first that does not reproduce.
    """
    problems = export_problems(doc)
    if problems:
        raise SearchError(f"{source}: {problems[0]}")
    try:
        check_export_cache(doc, cache)
        costs = _costs(doc, cache)
    except SearchError as exc:
        raise SearchError(f"{source}: {exc}") from None
    configs = export_configs(doc, cache, source=source)
    ctx = _Context(doc, cache, costs, source, chunk_size)
    _check_numbers(ctx, configs)
    warnings: list[str] = []
    certified = [i for i, entry in enumerate(doc["configs"]) if "certificate" in entry]
    for i in certified:
        warnings += _check_certificate(ctx, i, *configs[i])
    return Verification(len(configs), len(certified), tuple(dict.fromkeys(warnings)))
