"""``ensemble``: this exit's and its partner's probability of this exit's top-1 class, averaged."""

from __future__ import annotations

import numpy as np

from . import register_rule
from ._base import ExitRule, RuleInputs

__all__ = ["Ensemble"]


@register_rule
class Ensemble(ExitRule):
    """Score = ``(p[0] + q) / 2`` in float32, ``q`` the partner's probability of this exit's top-1 class when it is
    among the partner's top-2 (the exit of the same head type one position earlier,
    :func:`~contract.rules.partner_exit`), else 0 (a lower bound: the cache keeps the top-k only); in [0, 1]. An
    equal-weight ensemble of the two heads' probabilities, read at this exit's prediction."""

    name = "ensemble"
    reads = frozenset({"topk_probs", "partner"})
    k = 2

    def score(self, inputs: RuleInputs) -> np.ndarray:
        ids, partner_ids, partner_probs = inputs.partner()
        top = ids[:, :1]
        hit = partner_ids[:, : self.k] == top
        q = np.where(hit, partner_probs[:, : self.k], np.float32(0.0)).sum(axis=1, dtype=np.float32)
        p1 = inputs.probs()[:, 0].astype(np.float32)
        return ((p1 + q) * np.float32(0.5)).astype(np.float32)

    def threshold_range(self, n_classes: int | None = None) -> tuple[float, float]:
        return (0.0, 1.0)
