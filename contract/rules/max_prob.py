"""``max_prob``: the top-1 softmax probability."""

from __future__ import annotations

import numpy as np

from . import register_rule
from ._base import ExitRule, RuleInputs

__all__ = ["MaxProb"]


@register_rule
class MaxProb(ExitRule):
    """Score = ``p[0]``, the top-1 probability (the cache's ``topk_probs`` rank 0), in [0, 1]."""

    name = "max_prob"
    reads = frozenset({"topk_probs"})
    k = 1

    def score(self, inputs: RuleInputs) -> np.ndarray:
        return np.array(inputs.probs()[:, 0], dtype=np.float32)

    def threshold_range(self, n_classes: int | None = None) -> tuple[float, float]:
        return (0.0, 1.0)
