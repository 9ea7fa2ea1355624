"""``margin``: the top-1 minus the top-2 softmax probability."""

from __future__ import annotations

import numpy as np

from . import register_rule
from ._base import ExitRule, RuleInputs

__all__ = ["Margin"]


@register_rule
class Margin(ExitRule):
    """Score = ``p[0] - p[1]`` in float32 (top-k probabilities sorted descending), in [0, 1]."""

    name = "margin"
    reads = frozenset({"topk_probs"})
    k = 2

    def score(self, inputs: RuleInputs) -> np.ndarray:
        p = inputs.probs()
        return np.subtract(p[:, 0], p[:, 1], dtype=np.float32)

    def threshold_range(self, n_classes: int | None = None) -> tuple[float, float]:
        return (0.0, 1.0)
