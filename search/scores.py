"""Exit scores read from a cache: the search's glue to the exit rules of :mod:`contract.rules`.

A rule declares what it reads; this module hands it the cache's arrays as stored (top-k probabilities
float32, logits float16), block by block, and checks the scores are finite. The formulas live in the
rules alone, so the runtime and the bundle router compute the same float32 numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from contract import (
    ContractError,
    ExitRule,
    RuleInputs,
    exit_partners,
    get_rule,
    list_rules,
    partner_exit,
    rule_class,
)
from data_cache import format as fmt
from data_cache.blocks import BlockReader
from data_cache.integrity import PROB_MAX, check_read_range

from ._validation import SearchError

__all__ = [
    "score_kinds",
    "rule_for",
    "score_range",
    "read_inputs",
    "compute_scores",
    "servable",
    "resolve_rules",
]


def score_kinds() -> list[str]:
    """The names of the registered exit rules (``--score`` choices)."""
    return list_rules()


def rule_for(kind: str) -> ExitRule:
    """The registered rule ``kind`` (unfitted when it learns params: what it reads and its range), or a SearchError
    naming it and the known ones."""
    try:
        return rule_class(kind)()
    except ContractError as exc:
        raise SearchError(str(exc)) from None


def score_range(kind: str, n_classes: int) -> tuple[float, float]:
    """The closed interval every score of ``kind`` lies in (thresholds are checked against it)."""
    return rule_for(kind).threshold_range(n_classes)


def servable(cache, rule: ExitRule, split: str = "search") -> str | None:
    """Why the cache cannot serve ``rule``'s inputs on ``split`` (None: it can)."""
    if "logits" in rule.reads and cache.logits(split) is None:
        return f"it reads logits and split {split!r} of this cache has none (dump with --logits)"
    if "topk_probs" in rule.reads and cache.k < rule.k:
        return f"it reads the top-{rule.k} probabilities and this cache stores k={cache.k}"
    if "partner" in rule.reads and not exit_partners(cache.exits):
        return "it compares an exit with the one of its head type a position earlier, and no exit has one"
    return None


def resolve_rules(
    spec, score: str, cache, label: str = "rules", score_label: str = "score"
) -> tuple[str, ...]:
    """The exit rules dp may choose per exit, ``score`` first: ``spec`` None (``score`` alone), ``"auto"`` (every
    registered rule this cache can serve, but those with learned params: name ``gate`` to add it) or names (a
    comma list or a sequence). An unknown name, or one whose inputs the cache lacks (``score`` too), is one
    SearchError line naming it and the reason."""
    why = servable(cache, rule_for(score))
    if why:
        raise SearchError(
            f"{score_label}: rule {score!r} cannot be scored at any exit of this cache: {why}"
        )
    if spec is None:
        return (score,)
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    if names == ["auto"]:
        return tuple(
            dict.fromkeys(
                [score]
                + [
                    n
                    for n in score_kinds()
                    if not rule_class(n).learned and servable(cache, rule_for(n)) is None
                ]
            )
        )
    if not names:
        raise SearchError(f"{label} is empty; name exit rules (comma-separated) or 'auto'")
    for n in names:
        if n not in score_kinds():
            raise SearchError(
                f"{label}: unknown score kind {n!r}: must be one of {score_kinds()} or 'auto'"
            )
        why = servable(cache, rule_for(n))
        if why:
            raise SearchError(
                f"{label}: rule {n!r} cannot be scored at any exit of this cache: {why}"
            )
    return tuple(dict.fromkeys([score] + names))


def _check_finite(row: np.ndarray, cache, split: str, rule: ExitRule, exit_index: int) -> None:
    """A NaN or inf score names the cache file and the exit, never a threshold the user did not give.

    The row was just computed, so the check is nearly free.
    """
    if np.isfinite(row).all():
        return
    fname, field = (
        ("logits.npy", "logits") if "logits" in rule.reads else ("topk_probs.npy", "probabilities")
    )
    where = f"{getattr(cache, 'path', '<memory>')}/{split}/{fname}"
    raise SearchError(
        f"{where}: {field}: NaN or inf values at exit {cache.exits[exit_index].name} give "
        f"non-finite {rule.name} scores; check the cache with python -m data_cache.validate"
    )


def _check_cache(cache, split: str, rule: ExitRule):
    """The cache arrays ``rule`` reads: ``(logits, topk_probs)``, None where it reads nothing."""
    logits = probs = None
    if "logits" in rule.reads:
        logits = cache.logits(split)
        if logits is None:
            raise SearchError(
                f"score {rule.name!r} needs logits, and split {split!r} of this cache has none; "
                "dump with --logits or use a score read from top-k probabilities"
            )
    if "topk_probs" in rule.reads:
        if cache.k < rule.k:
            raise SearchError(
                f"score {rule.name!r} needs the top-{rule.k} probabilities; "
                f"this cache stores k={cache.k}"
            )
        probs = cache.topk_probs(split)
    return logits, probs


def read_inputs(
    cache, split: str, rule: ExitRule, exit_index: int, start: int, stop: int, reader: BlockReader
) -> RuleInputs:
    """What ``rule`` reads at one exit for the samples ``start:stop`` of ``split``, as the cache stores it (each
    probability read is range-checked: the integrity pass may be skipped)."""
    logits, probs = _check_cache(cache, split, rule)
    top = None
    if probs is not None:
        top = np.empty((rule.k, stop - start), dtype=np.float32)
        for r in range(rule.k):
            check_read_range(
                cache,
                split,
                fmt.TOPK_PROBS,
                "probabilities",
                exit_index,
                reader.read(probs[exit_index, r, start:stop], top[r]),
                0.0,
                PROB_MAX,
            )
    z = reader.read(logits[exit_index, start:stop]) if logits is not None else None
    inputs = RuleInputs(topk_probs=None if top is None else top.T, logits=z)
    if "partner" not in rule.reads:
        return inputs
    partner = partner_exit(cache.exits, exit_index)
    if partner is None:
        raise SearchError(
            f"exit {cache.exits[exit_index].name}: rule {rule.name!r} compares it with the exit of its head "
            "type one position earlier, and there is none"
        )
    ids = cache.topk_ids(split)
    mine = np.empty((rule.k, stop - start), dtype=np.int32)
    theirs = np.empty((rule.k, stop - start), dtype=np.int32)
    theirs_p = np.empty((rule.k, stop - start), dtype=np.float32)
    for r in range(rule.k):
        reader.read(ids[exit_index, r, start:stop], mine[r])
        reader.read(ids[partner, r, start:stop], theirs[r])
        check_read_range(
            cache,
            split,
            fmt.TOPK_PROBS,
            "probabilities",
            partner,
            reader.read(probs[partner, r, start:stop], theirs_p[r]),
            0.0,
            PROB_MAX,
        )
    return RuleInputs(
        inputs.topk_probs,
        z,
        mine.T.astype(np.int64),
        theirs.T.astype(np.int64),
        theirs_p.T,
    )


def compute_scores(
    cache,
    split: str,
    kind: str = "max_prob",
    *,
    exits=None,
    start: int = 0,
    stop: int | None = None,
    reader: BlockReader | None = None,
    params: Mapping[int, Mapping[str, Any]] | None = None,
) -> np.ndarray:
    """Scores ``(n_exits, stop - start)`` float32 of the chosen exits (all by default) for the
    samples ``start:stop`` of ``split`` (all by default).

    ``params``: a rule with learned parameters (``gate``) scores each exit with that exit's params (by cache exit
    index); an exit without any gets zeros (it never decides: no configuration uses the rule there).
    Memory-mapped caches are read block by block with ``reader`` (see :mod:`data_cache.blocks`), so
    the pages read never pile up in the process. A NaN or inf score is refused, naming the file.
    """
    rule = rule_for(kind)
    _check_cache(cache, split, rule)
    exits = range(len(cache.exits)) if exits is None else list(exits)
    stop = cache.n_samples(split) if stop is None else stop
    if reader is None:
        with BlockReader() as own:
            return compute_scores(
                cache, split, kind, exits=exits, start=start, stop=stop, reader=own, params=params
            )
    out = np.empty((len(exits), stop - start), dtype=np.float32)
    for j, e in enumerate(exits):
        at = rule
        if "partner" in rule.reads and partner_exit(cache.exits, e) is None:
            out[j] = rule.threshold_range(cache.n_classes)[0]  # no partner: never leaves there
            continue
        if rule.learned:
            if not params or e not in params:
                out[j] = 0.0
                continue
            at = _fitted(kind, params[e], cache, e)
        out[j] = at.score(read_inputs(cache, split, rule, e, start, stop, reader))
        _check_finite(out[j], cache, split, rule, e)
    return out


def _fitted(kind: str, params: Mapping[str, Any], cache, exit_index: int) -> ExitRule:
    """The rule ``kind`` with one exit's learned ``params``, or a SearchError naming the exit."""
    try:
        return get_rule(kind, params)
    except ContractError as exc:
        raise SearchError(f"exit {cache.exits[exit_index].name}: {exc}") from None
