"""``ExitRule``: how confident an exit is in a sample, and the one leave test.

A rule is a registered class (:func:`contract.rules.register_rule`). It declares what it reads
(:attr:`ExitRule.reads`: this exit's top-k probabilities, its logits, its partner exit's top-k), computes its
score once, on numpy arrays (:meth:`ExitRule.score`), says which thresholds are meaningful
(:meth:`ExitRule.threshold_range`) and may learn parameters on the fit split (:meth:`ExitRule.fit`,
serialised with :meth:`ExitRule.to_json` into the export and read back with :meth:`ExitRule.from_json`).
Every side (the search from a cache, ``exits.ExitRuntime`` from torch tensors, the bundle router from
onnxruntime outputs) turns what it has into :class:`RuleInputs` with the dtypes the cache stores, so the
score is the same float32 number on every side, and decides with :meth:`ExitRule.leaves`.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import ContractError

__all__ = ["READS", "RuleInputs", "ExitRule", "float32_cut", "partner_exit", "exit_partners"]

READS = frozenset({"topk_probs", "logits", "partner"})
"""What a rule may read: ``topk_probs`` (this exit's top-k softmax probabilities), ``logits`` (this exit's
logits as the cache stores them, float16), ``partner`` (this exit's top-k class ids, and the top-k class ids and
probabilities of its partner: the exit of the same head type one position earlier, :func:`partner_exit`)."""


# called at every exit of every batch, with a configuration's few thresholds
@functools.lru_cache(maxsize=4096)
def float32_cut(threshold: float) -> np.float32:
    """The largest float32 <= ``threshold``: for a float32 score s, ``s > cut`` iff ``float64(s) > threshold``.

    Comparing float32 scores with this cut gives the semantics of ``exitconfig/1`` (a float64 comparison)
    at float32 speed; it is the only definition in the project.
    """
    cut = np.float32(threshold)
    return np.nextafter(cut, np.float32(-np.inf)) if float(cut) > threshold else cut


def partner_exit(exits: Sequence[Any], index: int) -> int | None:
    """The partner of exit ``index`` among ``exits`` (records with ``position`` and ``head``, in execution order,
    the last the final exit): the early exit of the same head type at the early position just before its own;
    None for the final exit, an exit at the first position, or when no exit of its head type stands there.

    A rule reading ``partner`` compares an exit with it; the partner's head runs for every row that reaches the
    exit, enabled or not, and is paid once (``CostTable.paired``)."""
    early = exits[:-1]
    if not 0 <= index < len(early):
        return None
    positions = sorted({e.position for e in early})
    at = positions.index(early[index].position)
    if at == 0:
        return None
    before = positions[at - 1]
    head = early[index].head
    return next((i for i, e in enumerate(early) if e.position == before and e.head == head), None)


def exit_partners(exits: Sequence[Any]) -> dict[int, int]:
    """Every exit of ``exits`` that has a partner, mapped to it (:func:`partner_exit`)."""
    return {i: p for i in range(len(exits)) if (p := partner_exit(exits, i)) is not None}


@dataclass(frozen=True)
class RuleInputs:
    """What a rule reads for ``n`` rows at one exit (only the fields its :attr:`~ExitRule.reads` names are set).

    ``topk_probs`` ``(n, k)`` float32: softmax probabilities of float32 logits, descending (the cache's
    ``topk_probs``, transposed); ``logits`` ``(n, n_classes)`` float16 (the cache's ``logits``); for a rule reading
    ``partner``: ``ids`` ``(n, k)`` int64, this exit's top-k class ids, and ``partner_ids`` / ``partner_probs``
    ``(n, k)`` (int64 / float32, descending), its partner's.
    """

    topk_probs: np.ndarray | None = None
    logits: np.ndarray | None = None
    ids: np.ndarray | None = None
    partner_ids: np.ndarray | None = None
    partner_probs: np.ndarray | None = None

    def probs(self) -> np.ndarray:
        """``topk_probs``, which a rule reading them requires."""
        if self.topk_probs is None:
            raise ContractError("the rule reads topk_probs; these inputs carry none")
        return self.topk_probs

    def partner(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids, partner_ids, partner_probs)``, which a rule reading ``partner`` requires."""
        if self.ids is None or self.partner_ids is None or self.partner_probs is None:
            raise ContractError("the rule reads its partner exit; these inputs carry none")
        return self.ids, self.partner_ids, self.partner_probs

    def logits16(self) -> np.ndarray:
        """``logits``, which a rule reading them requires."""
        if self.logits is None:
            raise ContractError("the rule reads logits; these inputs carry none")
        return self.logits


class ExitRule(ABC):
    """An exit rule: a float32 score per sample, higher = more confident; a sample leaves when
    ``score > threshold`` (:meth:`leaves`).

    Subclasses set :attr:`name`, :attr:`reads` (a subset of :data:`READS`) and :attr:`k` (how many top-k
    probabilities they read, 0 when none), and implement :meth:`score` and :meth:`threshold_range`. A rule
    with learned parameters (``gate``) sets :attr:`learned` and overrides :meth:`fit`, :meth:`to_json` and
    :meth:`from_json`.
    """

    name: ClassVar[str]
    reads: ClassVar[frozenset[str]]
    k: ClassVar[int] = 0
    learned: ClassVar[bool] = False
    """Whether the rule has parameters learned on the fit split (:meth:`fit`): such a rule scores only once fitted
    (built from its params); ``cls()`` is the unfitted rule (what it reads, its range)."""

    @abstractmethod
    def score(self, inputs: RuleInputs) -> np.ndarray:
        """Scores ``(n,)`` float32 of the ``n`` rows of ``inputs``."""

    @abstractmethod
    def threshold_range(self, n_classes: int | None = None) -> tuple[float, float]:
        """The closed interval every score lies in (thresholds are checked against it); with ``n_classes``
        None, the bounds that hold for any number of classes."""

    def fit(self, inputs: RuleInputs, target: np.ndarray) -> ExitRule:
        """Learn parameters on the fit split (``target`` ``(n,)`` bool: whether leaving at the exit is harmless,
        :func:`contract.harmless`); a rule without parameters learns nothing."""
        return self

    def to_json(self) -> dict[str, Any]:
        """The learned parameters, plain JSON (written as the exit's ``params``; empty when none)."""
        return {}

    @classmethod
    def from_json(cls, params: Mapping[str, Any]) -> ExitRule:
        """A rule from its :meth:`to_json` parameters; a rule without parameters refuses any."""
        if params:
            raise ContractError(f"score {cls.name!r} takes no params (got {sorted(params)})")
        return cls()

    def leaves(
        self, scores: np.ndarray, threshold: float, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Whether each row leaves: ``score > threshold`` as float64 reads it, done in float32 against
        :func:`float32_cut` of ``threshold``. The one leave test of every side; never overridden."""
        return np.greater(scores, float32_cut(threshold), out=out)

    def __repr__(self) -> str:
        params = self.to_json()
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in params.items())})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ExitRule)
            and type(other) is type(self)
            and other.to_json() == self.to_json()
        )

    def __hash__(self) -> int:
        return hash((self.name, repr(sorted(self.to_json().items()))))
