"""Exit rules: a registry of :class:`ExitRule` classes, one file per rule.

A new rule is one new module here (a subclass of :class:`ExitRule` decorated with :func:`register_rule`) plus
its test, and its name in the import list at the end of this file; the search (``python -m search.pareto
--score NAME``), ``exits.ExitRuntime`` and the bundle router then know it, and ``tests/contract`` runs it
through all three.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ContractError
from ._base import READS, ExitRule, RuleInputs, exit_partners, float32_cut, partner_exit
from ._logistic import harmless

__all__ = [
    "READS",
    "ExitRule",
    "RuleInputs",
    "float32_cut",
    "register_rule",
    "get_rule",
    "rule_class",
    "list_rules",
    "rule_inputs_from_logits",
    "rule_inputs_from_topk",
    "partner_exit",
    "exit_partners",
    "reads_partner",
    "topk_of_logits",
    "harmless",
]

_RULES: dict[str, type[ExitRule]] = {}


def register_rule(cls: type[ExitRule]) -> type[ExitRule]:
    """Class decorator: register ``cls`` under ``cls.name`` (a name is registered once)."""
    if cls.name in _RULES:
        raise ContractError(f"exit rule {cls.name!r} is registered twice")
    if not cls.reads or not cls.reads <= READS:
        raise ContractError(
            f"exit rule {cls.name!r} reads {sorted(cls.reads)}; choose from {sorted(READS)}"
        )
    _RULES[cls.name] = cls
    return cls


def list_rules() -> list[str]:
    """The names of the registered rules, in registration order."""
    return list(_RULES)


def rule_class(name: Any) -> type[ExitRule]:
    """The class registered as ``name``, or one line naming it and the known ones (``rule_class(name)()`` is the
    unfitted rule: what it reads and its range, for a rule with learned params)."""
    cls = _RULES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ContractError(f"unknown score kind {name!r}: must be one of {list_rules()}")
    return cls


def get_rule(name: Any, params: Mapping[str, Any] | None = None) -> ExitRule:
    """The rule registered as ``name`` (with its learned ``params``), or one line naming it and the known ones."""
    return rule_class(name).from_json(params or {})


def reads_partner(rule: ExitRule | str) -> bool:
    """Whether a rule (or the rule registered as a name) reads its exit's partner (:func:`partner_exit`)."""
    return "partner" in (rule_class(rule) if isinstance(rule, str) else rule).reads


def rule_inputs_from_logits(
    rule: ExitRule, logits: Any, partner: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[RuleInputs, np.ndarray]:
    """The numpy adapter (the bundle router's, and any side holding float32 logits ``(n, n_classes)`` as a numpy
    array): what ``rule`` reads, as the cache stores it, and the top-1 prediction ``(n,)`` int64; ``partner``: the
    partner exit's ``(ids, probs)`` (:func:`topk_of_logits`), for a rule reading it.

    Softmax in float32; top-k sorted descending; logits rounded to float16.
    """
    z = np.asarray(logits, dtype=np.float32)
    p = _softmax(z)
    pred = p.argmax(axis=1)
    probs = None
    if "topk_probs" in rule.reads:
        k = min(rule.k, p.shape[1])
        if k == 1:  # max_prob: no partition and sort (at batch 1 every step counts)
            probs = p.max(axis=1, keepdims=True)
        else:
            probs = -np.sort(-np.partition(p, p.shape[1] - k, axis=1)[:, p.shape[1] - k :], axis=1)
    logits16 = z.astype(np.float16) if "logits" in rule.reads else None
    if "partner" not in rule.reads:
        return RuleInputs(topk_probs=probs, logits=logits16), pred
    if partner is None:
        raise ContractError(f"rule {rule.name!r} reads its partner exit's outputs; none were given")
    ids, _ = _topk(p, rule.k)
    return RuleInputs(probs, logits16, ids, partner[0], partner[1]), pred


def rule_inputs_from_topk(
    rule: ExitRule,
    probs: np.ndarray,
    ids: np.ndarray,
    logits: Any = None,
    partner: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[RuleInputs, np.ndarray]:
    """:func:`rule_inputs_from_logits` from a top-k computed elsewhere (a bundle graph's scores): ``probs`` ``(n,
    K)`` float32 softmax probabilities, descending, and their class ids ``ids`` ``(n, K)`` int64, ``K >= rule.k``;
    ``logits`` float32 ``(n, n_classes)`` for a rule reading them."""
    if probs.shape[1] < rule.k:
        raise ContractError(
            f"rule {rule.name!r} reads the top {rule.k} classes; {probs.shape[1]} were given"
        )
    top = probs[:, : rule.k] if "topk_probs" in rule.reads else None
    logits16 = (
        np.asarray(logits, dtype=np.float32).astype(np.float16) if "logits" in rule.reads else None
    )
    if "partner" not in rule.reads:
        return RuleInputs(topk_probs=top, logits=logits16), ids[:, 0]
    if partner is None:
        raise ContractError(f"rule {rule.name!r} reads its partner exit's outputs; none were given")
    return RuleInputs(top, logits16, ids[:, : rule.k], partner[0], partner[1]), ids[:, 0]


def topk_of_logits(logits: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` class ids ``(n, k)`` int64 and softmax probabilities ``(n, k)`` float32 (descending) of float32
    logits, as the cache stores them: what a partner exit hands the rule of the exit after it."""
    return _topk(_softmax(np.asarray(logits, dtype=np.float32)), k)


def _softmax(z: np.ndarray) -> np.ndarray:
    """Softmax of float32 logits ``(n, n_classes)`` along the classes, in float32."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _topk(p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` class ids (int64) and probabilities of ``p``, descending (ties to the lower id)."""
    ids = np.argsort(-p, axis=1, kind="stable")[:, : min(k, p.shape[1])]
    return ids.astype(np.int64), np.take_along_axis(p, ids, axis=1)


# the registered rules, one module each (a new rule adds its module here)
from . import max_prob  # noqa: E402,F401,I001
from . import margin  # noqa: E402,F401
from . import neg_entropy  # noqa: E402,F401
from . import energy  # noqa: E402,F401
from . import gate  # noqa: E402,F401
from . import agree  # noqa: E402,F401
from . import ensemble  # noqa: E402,F401
from . import partner_gate  # noqa: E402,F401
