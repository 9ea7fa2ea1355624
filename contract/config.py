"""``ExitConfig``: one configuration of an ``exitconfig/1`` table, the one type every side uses, and its one
validator.

A configuration enables early exits (indices into the cache's exit list, which is also the model's
``exits`` and the index a bundle manifest gives each served exit), in execution order, one per position, each
with a threshold; one exit rule (``score``, with its learned ``params`` per enabled exit) decides at all of
them. A sample leaves at the first enabled exit whose score passes :meth:`~contract.rules.ExitRule.leaves`,
else at the final exit; the empty configuration is the base model.

In a file an enabled exit reads ``{"name", "position", "head", "score", "params", "threshold"}``;
:meth:`ExitConfig.from_json` resolves it against an :class:`ExitTable` (the cache's exits, the model's, or the
ones a bundle serves) and validates it, once, at that boundary; :meth:`ExitConfig.to_json` writes it back.
Each side re-raises :class:`~contract.errors.ContractError` as its own one-line error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from .errors import ContractError
from .rules import ExitRule, exit_partners, get_rule, list_rules, reads_partner, rule_class

__all__ = ["ExitRef", "ExitTable", "ExitConfig", "entries_problems"]


@dataclass(frozen=True)
class ExitRef:
    """An exit a configuration may name: its index in the cache's exit list, name, position and head."""

    index: int
    name: str
    position: int
    head: str | None


@dataclass(frozen=True)
class ExitTable:
    """The exits configurations resolve against (all of the cache's exits, or the ones a bundle serves, each
    with its cache index), the final exit's index, the number of classes (threshold ranges) and how messages
    name the owner (``where``: ``"in this cache"``, ...) and each early exit's partner (``partners``: cache index
    to cache index, :func:`contract.rules.partner_exit` of the cache's exits)."""

    refs: tuple[ExitRef, ...]
    final: int
    n_classes: int
    where: str = "in this cache"
    partners: Mapping[int, int] = field(default_factory=dict)
    by_name: dict[str, ExitRef] = field(init=False, repr=False, compare=False)
    by_index: dict[int, ExitRef] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {r.name: r for r in self.refs})
        object.__setattr__(self, "by_index", {r.index: r for r in self.refs})

    @classmethod
    def of(cls, owner: Any, where: str = "in this cache") -> ExitTable:
        """An ExitTable as it is, or the table of ``owner.exits`` (each with ``name``, ``position``, ``head``;
        the last is the final exit) and ``owner.n_classes`` (a cache)."""
        if isinstance(owner, ExitTable):
            return owner
        exits = owner.exits
        refs = tuple(ExitRef(i, e.name, e.position, e.head) for i, e in enumerate(exits))
        return cls(refs, len(exits) - 1, owner.n_classes, where, exit_partners(exits))


def _got(x: Any) -> str:
    text = repr(x)
    return f"got {text[:60]}{'...' if len(text) > 60 else ''}"


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x: Any) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


def _rule_problem(score: Any, params: Any) -> tuple[ExitRule | None, str | None]:
    """The rule a ``score`` (and ``params``) names, or why it cannot be used."""
    if params is not None and not isinstance(params, Mapping):
        return None, f"params: must be an object ({_got(params)})"
    if score not in list_rules():
        return None, f"score: must be one of {list_rules()}; unknown score kind {score!r}"
    try:
        rule = get_rule(score, params)
    except ContractError as exc:
        return None, f"params: {exc}"
    return rule, None


def entries_problems(
    entries: Any,
    field: str = "exits",
    default_score: str = "max_prob",
    n_classes: int | None = None,
) -> list[str]:
    """Every problem of a configuration's ``exits`` list on its own (exact types, known rule, threshold
    in the rule's range, execution order), one ``field: problem`` line each; an entry without ``score``
    uses ``default_score``."""
    each, across = _entries_problems(entries, field, default_score, n_classes)
    return each + across


def _entries_problems(
    entries: Any, field: str, default_score: str, n_classes: int | None
) -> tuple[list[str], list[str]]:
    """The problems of each entry on its own, then those between entries (order, mixed rules)."""
    if not isinstance(entries, list):
        return [f"{field}: must be a list of exit objects ({_got(entries)})"], []
    problems: list[str] = []
    across: list[str] = []
    last = None
    for j, d in enumerate(entries):
        f = f"{field}[{j}]"
        if not isinstance(d, Mapping):
            problems.append(f"{f}: must be an object with name, position and threshold ({_got(d)})")
            continue
        problems += [
            f"{f}.{key}: missing" for key in ("name", "position", "threshold") if key not in d
        ]
        for key in ("name", "head"):
            if key in d and (not isinstance(d[key], str) or not d[key]):
                problems.append(f"{f}.{key}: must be a non-empty string ({_got(d[key])})")
        pos = d.get("position")
        if "position" in d:
            if not _int(pos) or pos < 0:
                problems.append(f"{f}.position: must be an integer >= 0 ({_got(pos)})")
            elif last is not None and pos <= last:
                across.append(
                    f"{f}.position: {pos} after {last}: enabled exits are in execution order, one per "
                    "position"
                )
            else:
                last = pos
        score = d.get("score", default_score)
        rule, problem = _rule_problem(score, d.get("params"))
        if problem:
            problems.append(f"{f}.{problem}")
        if "threshold" in d:
            t = d["threshold"]
            if not _number(t):
                problems.append(f"{f}.threshold: must be a finite number ({_got(t)})")
            elif rule is not None:
                lo, hi = rule.threshold_range(n_classes)
                if not lo <= t <= hi:
                    problems.append(
                        f"{f}.threshold: {t} outside [{lo:g}, {hi:g}] for score {score!r}"
                    )
    return problems, across


def _resolve(d: Any, j: int, table: ExitTable) -> ExitRef | None:
    """The exit entry ``d`` names in ``table`` (None when its name or position is not typed right: a schema
    problem), or a ContractError: unknown name, another position or head, the final exit."""
    if (
        not isinstance(d, Mapping)
        or not isinstance(d.get("name"), str)
        or not _int(d.get("position"))
    ):
        return None
    name, pos = d["name"], d["position"]
    ref = table.by_name.get(name)
    if ref is None:
        raise ContractError(f"exits[{j}]: exit {name!r} is not {table.where}")
    if ref.position != pos or d.get("head", ref.head) != ref.head:
        raise ContractError(
            f"exits[{j}]: exit {name!r} is at position {ref.position} with head {ref.head!r}, "
            f"not {pos} / {d.get('head')!r}"
        )
    if ref.index == table.final:
        raise ContractError(
            f"exits[{j}]: exit {name!r} is the final exit; it cannot be an early exit"
        )
    return ref


@dataclass(frozen=True)
class ExitConfig:
    """Enabled early exits (cache exit indices, execution order, at most one per position), their thresholds,
    the rule of each enabled exit and its learned ``params`` (empty: none).

    ``rules``: the rule name of each enabled exit; empty when every exit uses ``score`` (the canonical form: a
    uniform ``rules`` is folded into ``score``, so equal configurations compare equal). A mixed configuration's
    ``score`` is its first exit's rule; :attr:`rule_names` lists them all.

    ``id`` and ``predicted`` (the export's ``search``/``holdout`` numbers and ``certificate``) are carried for
    the runtime and the router and never compared.
    """

    exits: tuple[int, ...] = ()
    thresholds: tuple[float, ...] = ()
    score: str = "max_prob"
    params: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    rules: tuple[str, ...] = ()
    id: str = field(default="", compare=False)
    predicted: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exits", tuple(int(e) for e in self.exits))
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        if len(self.exits) != len(self.thresholds):
            raise ContractError(
                f"ExitConfig: {len(self.exits)} exits but {len(self.thresholds)} thresholds"
            )
        if self.params and len(self.params) != len(self.exits):
            raise ContractError(
                f"ExitConfig: {len(self.exits)} exits but {len(self.params)} params"
            )
        rules = tuple(self.rules)
        if rules and len(rules) != len(self.exits):
            raise ContractError(f"ExitConfig: {len(self.exits)} exits but {len(rules)} rules")
        if rules and len(set(rules)) == 1:
            object.__setattr__(self, "score", rules[0])
            rules = ()
        elif rules:
            object.__setattr__(self, "score", rules[0])
        object.__setattr__(self, "rules", rules)

    @property
    def rule_names(self) -> tuple[str, ...]:
        """The rule name of each enabled exit, in execution order."""
        return self.rules or (self.score,) * len(self.exits)

    @property
    def rule_set(self) -> tuple[str, ...]:
        """The distinct rules the configuration uses, ``score`` first (what a problem scoring it must hold)."""
        return tuple(dict.fromkeys((self.score, *self.rule_names)))

    @property
    def rule(self) -> ExitRule:
        """The rule the final stage scores with (its score is never compared: every sample still present leaves
        there): the first enabled exit's, with its params; with none enabled, ``score``'s rule, or ``max_prob`` in
        place of a rule that needs learned params. Per exit: :meth:`rule_at`."""
        if self.exits:
            return self.rule_at(0)
        return get_rule("max_prob" if rule_class(self.score).learned else self.score)

    def rule_at(self, j: int) -> ExitRule:
        """The rule, with its parameters, of the ``j``-th enabled exit."""
        return get_rule(self.rule_names[j], self.params[j] if self.params else None)

    def relative_cost(self, split: str = "search") -> float | None:
        return (self.predicted.get(split) or {}).get("relative_cost")

    def accuracy(self, split: str = "search") -> float | None:
        return (self.predicted.get(split) or {}).get("accuracy")

    @property
    def certificate(self) -> Mapping[str, Any] | None:
        return self.predicted.get("certificate")

    def check(self, table: Any) -> ExitConfig:
        """Raise ContractError unless the configuration fits ``table`` (an :class:`ExitTable`, or a cache:
        :meth:`ExitTable.of`): known rule, early exits in execution order one per position, thresholds in the
        rule's range. A configuration checked against an owner is not checked again against the same one."""
        if self.__dict__.get("_checked_for") is table:
            return self
        tab = ExitTable.of(table)
        if self.score not in list_rules():
            raise ContractError(f"unknown score kind {self.score!r}: must be one of {list_rules()}")
        last_pos = None
        for j, (e, t) in enumerate(zip(self.exits, self.thresholds, strict=True)):
            name = self.rule_names[j]
            rule, problem = _rule_problem(name, self.params[j] if self.params else None)
            if rule is None:
                raise ContractError(f"exit index {e}: {str(problem).split(': ', 1)[1]}")
            lo, hi = rule.threshold_range(tab.n_classes)
            ref = tab.by_index.get(e)
            if ref is None or e == tab.final:
                raise ContractError(f"exit index {e} is not an early exit {tab.where}")
            if last_pos is not None and ref.position <= last_pos:
                raise ContractError(
                    f"exit {ref.name!r}: enabled exits must be in execution order, one per position"
                )
            last_pos = ref.position
            if reads_partner(rule) and e not in tab.partners:
                raise ContractError(
                    f"exit {ref.name!r}: rule {name!r} compares it with the exit of head {ref.head!r} one "
                    f"position earlier, and there is none {tab.where}"
                )
            if not lo <= t <= hi:
                raise ContractError(
                    f"exit {ref.name!r}: threshold {t} outside [{lo:g}, {hi:g}] for score {name!r}"
                )
        object.__setattr__(self, "_checked_for", table)
        return self

    def built_for(self, table: Any) -> ExitConfig:
        """This configuration marked as fitting ``table`` without running :meth:`check`: only for code that built
        it from ``table``'s own exits, in execution order, with thresholds in the rule's range (the search engines,
        through ``ExitProblem.config``), so configurations are checked once, where they enter from outside (a
        file, a caller), and never inside search loops."""
        object.__setattr__(self, "_checked_for", table)
        return self

    def to_json(self, owner: Any) -> list[dict[str, Any]]:
        """The ``exits`` list of an ``exitconfig/1`` entry (``owner``: the cache, whose ``exits`` it names)."""
        exits, out = owner.exits, []
        for j, (e, t) in enumerate(zip(self.exits, self.thresholds, strict=True)):
            d = {
                "name": exits[e].name,
                "position": exits[e].position,
                "head": exits[e].head,
                "score": self.rule_names[j],
                "threshold": t,
            }
            if self.params and self.params[j]:
                d["params"] = dict(self.params[j])
            out.append(d)
        return out

    @classmethod
    def from_json(
        cls,
        entries: Any,
        table: Any,
        default_score: str = "max_prob",
        *,
        id: str = "",
        predicted: Mapping[str, Any] | None = None,
    ) -> ExitConfig:
        """The one validator: an entry's ``exits`` list checked (:func:`entries_problems`) and resolved
        against ``table`` (an :class:`ExitTable` or a cache) by name (position and head must agree; never the
        final exit). The first problem is a ContractError ``exits[j].field: problem``."""
        owner, table = table, ExitTable.of(table)
        each, across = _entries_problems(entries, "exits", default_score, table.n_classes)
        if each:
            raise ContractError(each[0])
        refs = [_resolve(d, j, table) for j, d in enumerate(entries)]
        if across:
            raise ContractError(across[0])
        indices = [r.index for r in refs if r is not None]
        params = [dict(d.get("params") or {}) for d in entries]
        rules = tuple(d.get("score", default_score) for d in entries)
        config = cls(
            tuple(indices),
            tuple(d["threshold"] for d in entries),
            default_score,
            tuple(params) if any(params) else (),
            rules,
            id=id,
            predicted=dict(predicted or {}),
        )
        try:
            return config.check(owner)
        except ContractError as exc:
            raise ContractError(f"exits: {exc}") from None
