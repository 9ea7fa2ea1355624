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
from ._base import READS, ExitRule, RuleInputs, float32_cut

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


def rule_inputs_from_logits(rule: ExitRule, logits: Any) -> tuple[RuleInputs, np.ndarray]:
    """The numpy adapter (the bundle router's, and any side holding float32 logits ``(n, n_classes)`` as a numpy
    array): what ``rule`` reads, as the cache stores it, and the top-1 prediction ``(n,)`` int64.

    Softmax in float32; top-k sorted descending; logits rounded to float16.
    """
    z = np.asarray(logits, dtype=np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    pred = p.argmax(axis=1)
    probs = None
    if "topk_probs" in rule.reads:
        k = min(rule.k, p.shape[1])
        probs = -np.sort(-np.partition(p, p.shape[1] - k, axis=1)[:, p.shape[1] - k :], axis=1)
    logits16 = z.astype(np.float16) if "logits" in rule.reads else None
    return RuleInputs(topk_probs=probs, logits=logits16), pred


# the registered rules, one module each (a new rule adds its module here)
from . import max_prob  # noqa: E402,F401,I001
from . import margin  # noqa: E402,F401
from . import neg_entropy  # noqa: E402,F401
from . import energy  # noqa: E402,F401
from . import gate  # noqa: E402,F401
