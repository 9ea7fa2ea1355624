"""``agree``: the top-1 probability, less one when the partner exit predicts another class."""

from __future__ import annotations

import numpy as np

from . import register_rule
from ._base import ExitRule, RuleInputs

__all__ = ["Agree"]


@register_rule
class Agree(ExitRule):
    """Score = ``p[0] - 1`` when this exit's top-1 class differs from its partner's (the exit of the same head type
    one position earlier, :func:`~contract.rules.partner_exit`), else ``p[0]``; float32, in [-1, 1]. A threshold
    at or above 0 lets only rows whose two heads agree leave; below 0, disagreeing rows leave too when confident."""

    name = "agree"
    reads = frozenset({"topk_probs", "partner"})
    k = 1

    def score(self, inputs: RuleInputs) -> np.ndarray:
        ids, partner_ids, _ = inputs.partner()
        p1 = inputs.probs()[:, 0].astype(np.float32)
        return np.where(ids[:, 0] == partner_ids[:, 0], p1, p1 - np.float32(1.0)).astype(np.float32)

    def threshold_range(self, n_classes: int | None = None) -> tuple[float, float]:
        return (-1.0, 1.0)
