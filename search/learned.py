"""Exit rules with learned parameters (``gate``) on the search side: fitted on fit rows only, then carried.

A learned rule is fitted at every early exit on the fit rows of the problem the search runs on, and only there
(:func:`fit_params`; in a certified search cutting calibration rows out of the search split, the fit rows are
the search split less that cut: never calibration or holdout rows). Its params then travel: a problem scores
every other split with them (``ExitProblem.on_split``, ``SplitEvaluator.like``, the calibration problems), and
a configuration carries each of its learned exits' params (``ExitProblem.config``), so evaluating it anywhere
(calibration, holdout, ``search.verify``, an export, the runtime, the bundle) scores with those params and
never refits. A rule that cannot be fitted at an exit is a SearchError naming the exit and the reason; it is
never replaced by another rule.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from contract import ContractError, RuleInputs, harmless, partner_exit, reads_partner, rule_class
from data_cache.blocks import BlockReader

from ._validation import SearchError
from .config import ExitConfig
from .scores import read_inputs, rule_for

__all__ = [
    "Params",
    "learned",
    "fit_params",
    "config_params",
    "params_mismatch",
    "group_by_params",
    "params_to_json",
    "params_from_json",
    "params_key",
]

Params = dict[str, dict[int, dict[str, Any]]]
"""Learned params per rule name, per cache exit index."""


def learned(rules: Iterable[str]) -> tuple[str, ...]:
    """The names among ``rules`` of rules with learned parameters."""
    return tuple(r for r in rules if rule_class(r).learned)


def _gather(
    cache, split: str, rule, exit_index: int, rows: np.ndarray, chunk_size: int
) -> RuleInputs:
    """What ``rule`` reads at one exit for ``rows`` (sorted indices into ``split``), read chunk by chunk."""
    total = cache.n_samples(split)
    fields = [f.name for f in dataclasses.fields(RuleInputs)]
    parts: dict[str, list[np.ndarray]] = {f: [] for f in fields}
    with BlockReader() as reader:
        for start in range(0, total, chunk_size):
            stop = min(total, start + chunk_size)
            lo, hi = np.searchsorted(rows, [start, stop])
            if hi == lo:
                continue
            got = read_inputs(cache, split, rule, exit_index, start, stop, reader)
            picked = rows[lo:hi] - start
            for f in fields:
                value = getattr(got, f)
                if value is not None:
                    parts[f].append(value[picked])
    return RuleInputs(**{f: np.concatenate(parts[f]) if parts[f] else None for f in fields})


def fit_params(
    cache, split: str, name: str, rows: np.ndarray, correct: np.ndarray, chunk_size: int
) -> dict[int, dict[str, Any]]:
    """Rule ``name`` fitted at every early exit of ``cache`` on ``rows`` (sorted indices into ``split``) to predict
    that leaving there is harmless (:func:`contract.harmless`); ``correct`` ``(n_exits,
    rows.size)``: whether each exit's top-1 is right on those rows (the last row: the final exit). An exit a rule
    reading its partner cannot use (no partner) gets no params. A fit that fails is a SearchError naming the exit
    and the reason."""
    rule = rule_for(name)
    out = {}
    for e in range(len(cache.exits) - 1):
        if reads_partner(rule) and partner_exit(cache.exits, e) is None:
            continue
        inputs = _gather(cache, split, rule, e, rows, chunk_size)
        try:
            out[e] = rule.fit(inputs, harmless(correct[e], correct[-1])).to_json()
        except ContractError as exc:
            raise SearchError(
                f"rule {name!r} cannot be fitted at exit {cache.exits[e].name} on {rows.size} fit rows of "
                f"split {split!r}: {exc} (leave {name!r} out of the rules)"
            ) from None
    return out


def config_params(configs: Iterable[ExitConfig]) -> Params:
    """The learned params the ``configs`` carry, per rule and exit (the first seen where they differ)."""
    out: Params = {}
    for c in configs:
        for j, (e, r) in enumerate(zip(c.exits, c.rule_names, strict=True)):
            if rule_class(r).learned and c.params and c.params[j]:
                out.setdefault(r, {}).setdefault(e, dict(c.params[j]))
    return out


def params_mismatch(config: ExitConfig, params: Mapping[str, Mapping[int, Any]]) -> str | None:
    """Why ``config`` cannot be scored with ``params`` (a learned exit whose params differ), or None."""
    for j, (e, r) in enumerate(zip(config.exits, config.rule_names, strict=True)):
        if not rule_class(r).learned:
            continue
        have = (params.get(r) or {}).get(e)
        mine = dict(config.params[j]) if config.params else {}
        if have is None or dict(have) != mine:
            return (
                f"its {r!r} params at exit index {e} are not the ones scored here (a learned rule is "
                "scored with the params it was fitted with, never refitted)"
            )
    return None


def group_by_params(configs: list[ExitConfig]) -> list[tuple[Params, list[int]]]:
    """``configs`` (their indices) in groups whose learned params agree at every exit, each with those params:
    one group for a table of one search."""
    groups: list[tuple[Params, list[int]]] = []
    for i, c in enumerate(configs):
        mine = config_params([c])
        for params, members in groups:
            if all(
                params.get(r, {}).get(e, p) == p for r, at in mine.items() for e, p in at.items()
            ):
                for r, at in mine.items():
                    params.setdefault(r, {}).update(at)
                members.append(i)
                break
        else:
            groups.append((mine, [i]))
    return groups


def params_to_json(params: Params | None) -> dict[str, dict[str, Any]]:
    """``params`` as plain JSON (exit indices as strings): what a worker process is handed."""
    return {r: {str(e): dict(p) for e, p in sorted(at.items())} for r, at in (params or {}).items()}


def params_from_json(doc: Mapping[str, Mapping[str, Any]] | None) -> Params:
    """The inverse of :func:`params_to_json`."""
    return {r: {int(e): dict(p) for e, p in at.items()} for r, at in (doc or {}).items()}


def params_key(params: Params | None) -> str:
    """``params`` as a hashable key: the same params, the same key."""
    return json.dumps(params_to_json(params), sort_keys=True)
