"""``neg_entropy``: the negative entropy of the softmax of the logits."""

from __future__ import annotations

import math

import numpy as np

from . import register_rule
from ._base import ExitRule, RuleInputs

__all__ = ["NegEntropy"]


@register_rule
class NegEntropy(ExitRule):
    """Score = ``sum(p * log p)`` over the full softmax of the float16 logits (as the cache stores them),
    computed in float32; in [-log(n_classes), 0]."""

    name = "neg_entropy"
    reads = frozenset({"logits"})

    def score(self, inputs: RuleInputs) -> np.ndarray:
        z = inputs.logits16().astype(np.float32)
        z = z - z.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        return (np.exp(logp) * logp).sum(axis=-1).astype(np.float32)

    def threshold_range(self, n_classes: int | None = None) -> tuple[float, float]:
        return (-math.inf if n_classes is None else -math.log(n_classes), 0.0)
