"""The text of a search result, as ``python -m search.pareto`` prints it: header, table of methods, every
exit alone, and each answer with its exact numbers on both whole splits."""

from __future__ import annotations

from ._answers import QueryAnswer
from ._certified_text import budget_title, cost_above_bound_note, drop_title
from .standalone import standalone_table

__all__ = ["table", "report", "answer_text", "LEGEND"]

LEGEND = (
    "HV: hypervolume of [error, relative cost] against the fixed reference point (1, 1); IGD+: distance "
    "to the best known front (the union of all methods' fronts) on search; save@X: cost saved by the "
    "cheapest front configuration within X points of the base top-1 accuracy, on holdout."
)

_COLUMNS = [
    ("method", "method", "<11", None),
    ("points", "points", ">6", None),
    ("HV search", "hv_search", ">9", ".4f"),
    ("HV holdout", "hv_holdout", ">10", ".4f"),
    ("IGD+", "igd", ">7", ".4f"),
    ("save@0.5pt", "save05", ">10", ".1%"),
    ("save@1pt", "save1", ">8", ".1%"),
    ("evals", "evals", ">10", None),
    ("seconds", "seconds", ">8", ".2f"),
]


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(indicators) -> str:
    """One row per method (``search.result.Indicators``) under a header line."""
    lines = ["  ".join(format(h, w) for h, _, w, _ in _COLUMNS)]
    for r in indicators:
        lines.append(
            "  ".join(
                format(_fmt(getattr(r, k), f) if f else str(getattr(r, k)), w)
                for _, k, w, f in _COLUMNS
            )
        )
    return "\n".join(lines)


def report(result, *, standalone: bool = False) -> str:
    """The header, the table of methods and (``standalone``) every exit alone."""
    cache, search, holdout, sample, oracle = (
        result.cache,
        result.search,
        result.holdout,
        result.sample,
        result.oracle,
    )
    lines = [
        f"cache {cache.fingerprint[:19]}  exits {len(cache.exits)}  search {search.n_samples}  "
        f"holdout {holdout.n_samples}  objective {result.options.objective}  score {result.options.score}"
        + (f"  rules {','.join(search.rules)}" if len(search.rules) > 1 else "")
    ]
    if search.costs.objective == "time":
        rec = search.costs.model.table.target
        lines.append(
            f"time: predicted from cost table {search.costs.model.table.name!r} ({rec.get('device', '?')}, "
            f"{rec.get('threads', '?')} thread(s), {search.costs.model.table.runtime}) at batch size "
            f"{search.costs.batch_size}"
            + (
                ", re-batched (every segment runs full batches)"
                if search.costs.model.rebatch
                else ""
            )
            + "; base model"
            f" {search.base.cost:.4g} ms per sample; relative cost = "
            "predicted time / the base model's"
        )
    if sample is not None:
        lines.append(
            f"fit: every method fitted on a seeded random subsample of {sample.size:,} of the {sample.of:,} "
            f"search samples (--seed {sample.seed}); every number below is scored on all samples"
        )
    lines.append(
        f"base: search accuracy {search.base.accuracy:.4%}, holdout {holdout.base.accuracy:.4%}; "
        f"oracle bound (search): accuracy {oracle[0]:.4%} at relative cost {oracle[1]:.4f}"
    )
    lines += [table(result.indicators), LEGEND]
    if standalone:
        lines.append("\nstandalone (search split):")
        for r in standalone_table(search):
            lines.append(
                f"  {r['name']:<40} pos {r['position']:>3}  accuracy {r['accuracy']:.4f}  "
                f"relative cost {r['relative_cost']:.4f}"
            )
    return "\n".join(lines)


def _fitted_on(result) -> str:
    sample = result.sample
    return (
        "the whole search split"
        if sample is None
        else f"the fitted subsample of search ({sample.size:,} samples)"
    )


def _describe(result, title: str, config) -> str:
    search, holdout = result.search, result.holdout
    s, h = search.evaluate_one(config), holdout.evaluate_one(config)
    mixed = len(set(config.rule_names)) > 1  # rules chosen per exit: each exit names its own
    exits = ", ".join(
        f"{search.cache.exits[e].name}{' ' + r if mixed else ''}>{t:.4f}"
        for e, t, r in zip(config.exits, config.thresholds, config.rule_names, strict=True)
    )
    return (
        f"{title}\n  exits: {exits or '(none: base model)'}\n"
        f"  search : accuracy {s.accuracy:.4%} (drop {100 * (search.base.accuracy - s.accuracy):.3f} points), "
        f"relative cost {s.relative_cost:.4f}{_time(search, s)}\n"
        f"  holdout: accuracy {h.accuracy:.4%} (drop {100 * (holdout.base.accuracy - h.accuracy):.3f} points), "
        f"relative cost {h.relative_cost:.4f}{_time(holdout, h)}"
    )


def _time(split, ev) -> str:
    """Under the time objective: the predicted ms per sample and speed-up."""
    if split.costs.objective != "time":
        return ""
    return f" ({ev.cost:.4g} ms per sample, predicted speed-up {1 / ev.relative_cost:.3f}x)"


def answer_text(result, answer: QueryAnswer) -> str:
    """The answer's heading and its exact numbers on search and holdout (and the uncertified contrast);
    an answer that failed has no text (its ``failure`` is the error line)."""
    if answer.config is None:
        return ""
    on, delta = _fitted_on(result), result.options.risk
    if answer.kind == "drop":
        if answer.certified is None:
            title = (
                f"\nuncertified: cheapest within {answer.limit} points of the base accuracy on {on} (no "
                "guarantee on unseen data):"
            )
        else:
            title = drop_title(answer.certified, answer.limit, delta)
    elif answer.certified is None:
        title = f"\nuncertified: most accurate within relative cost {answer.limit} on {on}:"
    else:
        title = budget_title(answer.certified, answer.limit, delta)
    text = _describe(result, title, answer.config)
    if (
        answer.kind != "drop"
        and answer.certified is not None
        and answer.certified.certificate is not None
    ):
        for name, ev in (("search", answer.on_search), ("holdout", answer.on_holdout)):
            if ev is not None and ev.relative_cost > answer.limit:
                text += "\n" + cost_above_bound_note(name, ev.relative_cost, answer.limit)
    if answer.contrast is not None:
        text += "\n" + _describe(
            result,
            f"for contrast, uncertified (chosen on {on}, no guarantee on unseen data):",
            answer.contrast,
        )
    return text
