"""The constrained queries of a search (``max_drop``, ``budget``): certified on calibration data by
default (``search.pareto_testing``), on the search split alone when ``uncertified``."""

from __future__ import annotations

from dataclasses import dataclass

from ._validation import SearchError
from .calibration import DEFAULT_FRACTION, Roles, make_roles
from .config import ExitConfig
from .exact import SplitEvaluator
from .front import Front
from .pareto_testing import Certificate, CertifiedAnswer, certify_budget, certify_drop, fit_front
from .problem import Evaluation, ExitProblem

__all__ = ["QueryAnswer", "answer_queries"]


@dataclass(frozen=True)
class QueryAnswer:
    """The answer to one query: ``kind`` ``"drop"`` (``limit`` in points of accuracy, as asked) or ``"budget"``
    (``limit`` a relative cost). ``config`` is None only with ``failure`` (why nothing answers); ``certified``
    is the Pareto Testing record (None when uncertified) and ``certificate`` what it certified (None when
    nothing passed); ``on_search``/``on_holdout`` the exact numbers on the two whole splits; ``contrast`` the
    uncertified answer to a certified drop query, when asked for (``show_uncertified``)."""

    kind: str
    limit: float
    config: ExitConfig | None
    certified: CertifiedAnswer | None = None
    on_search: Evaluation | None = None
    on_holdout: Evaluation | None = None
    contrast: ExitConfig | None = None
    failure: str | None = None

    @property
    def certificate(self) -> Certificate | None:
        return None if self.certified is None else self.certified.certificate

    def entry(self) -> tuple:
        """The answer as an export entry: ``("query", config)``, plus its certificate's JSON if any."""
        cert = self.certificate
        return ("query", self.config) if cert is None else ("query", self.config, cert.to_json())


@dataclass(frozen=True)
class _Context:
    """What a query is answered on: the problem the methods fitted on and their front there; the whole
    search split (exact) and the union of the fronts on it; holdout for the reported numbers."""

    fit: ExitProblem
    fit_union: Front
    search: SplitEvaluator
    holdout: SplitEvaluator
    union: Front

    def answer(self, kind: str, limit: float, config: ExitConfig | None, **kw) -> QueryAnswer:
        if config is None:
            return QueryAnswer(kind, limit, None, **kw)
        return QueryAnswer(
            kind,
            limit,
            config,
            on_search=self.search.evaluate_one(config),
            on_holdout=self.holdout.evaluate_one(config),
            **kw,
        )


def answer_queries(
    opts,
    fit: ExitProblem,
    fit_union: Front,
    search: SplitEvaluator,
    holdout: SplitEvaluator,
    union: Front,
) -> list[QueryAnswer]:
    """The answers to ``opts.max_drop`` and ``opts.budget`` (in that order; none when neither is asked).

    ``fit`` is the problem the methods fitted on (the search split, or its subsample) and ``fit_union``
    their front on it; ``union`` is the front on all of search. Certified answers take their candidates
    from ``fit`` alone and test them on calibration data it never saw (``search.calibration``).
    """
    if opts.max_drop is None and opts.budget is None:
        return []
    ctx = _Context(fit, fit_union, search, holdout, union)
    roles = None
    if not opts.uncertified:
        fraction = (
            DEFAULT_FRACTION if opts.calibration_fraction is None else opts.calibration_fraction
        )
        roles = make_roles(fit, fraction=fraction, seed=opts.seed)
    answers = []
    if opts.max_drop is not None:
        answers.append(_drop(opts, ctx, roles))
    if opts.budget is not None:
        answers.append(_budget(opts, ctx, roles))
    return answers


def _drop(opts, ctx: _Context, roles: Roles | None) -> QueryAnswer:
    from . import queries  # scipy: only when a query is asked

    drop = opts.max_drop / 100
    if roles is None:
        return ctx.answer(
            "drop", opts.max_drop, _uncertified_drop(queries, ctx, drop, opts.max_exits)
        )
    cert = certify_drop(
        roles,
        drop,
        delta=opts.risk,
        bound=opts.bound,
        fit_front=fit_front(roles, ctx.fit_union),
        max_exits=opts.max_exits,
    )
    contrast = (
        _uncertified_drop(queries, ctx, drop, opts.max_exits) if opts.show_uncertified else None
    )
    return ctx.answer("drop", opts.max_drop, cert.config, certified=cert, contrast=contrast)


def _budget(opts, ctx: _Context, roles: Roles | None) -> QueryAnswer:
    from . import queries
    from ._certified_text import budget_failure

    budget = opts.budget
    if roles is None:
        try:
            config = queries.most_accurate_within_budget(
                ctx.fit, budget, front=ctx.fit_union, max_exits=opts.max_exits
            ).config
        except SearchError as exc:
            return ctx.answer("budget", budget, None, failure=str(exc))
        if ctx.fit.samples is not None or not ctx.fit.costs.additive:
            config = (
                _best_on_all(
                    ctx.search,
                    [config, *ctx.union.configs],
                    lambda e: e.relative_cost <= budget * (1 + 1e-12),
                    lambda e: (e.error, e.relative_cost),
                )
                or config
            )
        return ctx.answer("budget", budget, config)
    cert = certify_budget(
        roles,
        budget,
        delta=opts.risk,
        fit_front=fit_front(roles, ctx.fit_union),
        max_exits=opts.max_exits,
    )
    if cert.certificate is None:
        return ctx.answer(
            "budget", budget, None, certified=cert, failure=budget_failure(cert, budget, opts.risk)
        )
    return ctx.answer("budget", budget, cert.config, certified=cert)


def _uncertified_drop(queries, ctx: _Context, drop: float, max_exits: int | None) -> ExitConfig:
    """The cheapest within ``drop`` (a fraction) on the fit problem; on a subsample, the best of it and the fronts
    that meets the limit on all search samples (a subsample's answer alone overfits); likewise when the cost is not
    additive (the queries' exact steps move on dp's additive surrogate, so the exact model chooses among them)."""
    config = queries._cheapest_within_drop(
        ctx.fit, drop, front=ctx.fit_union, max_exits=max_exits
    ).config
    if ctx.fit.samples is None and ctx.fit.costs.additive:
        return config
    search = ctx.search
    return _best_on_all(
        search,
        [config, *ctx.union.configs, ExitConfig(score=ctx.fit.score)],
        lambda e: search.base.accuracy - e.accuracy <= drop + 1e-12,
        lambda e: (e.relative_cost, e.error),
    )


def _best_on_all(search: SplitEvaluator, candidates: list, meets, key):
    """Of ``candidates``, the best by ``key`` that ``meets`` the limit on every search sample (None if none
    does). A query answered on a subsample holds there only; its exact numbers on the whole split decide."""
    evaluations = search.evaluations(candidates)
    ok = [(key(e), i) for i, e in enumerate(evaluations) if meets(e)]
    return candidates[min(ok)[1]] if ok else None
