"""``energy``: the log-sum-exp of the logits (the negative free energy; higher = more confident)."""

from __future__ import annotations

import math

import numpy as np

from . import register_rule
from ._base import ExitRule, RuleInputs

__all__ = ["Energy"]

_F16_MAX = float(np.finfo(np.float16).max)


@register_rule
class Energy(ExitRule):
    """Score = ``log(sum(exp(z)))`` of the float16 logits ``z`` (as the cache stores them), computed in
    float32 as ``max(z) + log(sum(exp(z - max(z))))``. Finite float16 logits bound it to
    [-65504, 65504 + log(n_classes)]."""

    name = "energy"
    reads = frozenset({"logits"})

    def score(self, inputs: RuleInputs) -> np.ndarray:
        z = inputs.logits16().astype(np.float32)
        top = z.max(axis=-1, keepdims=True)
        return (top + np.log(np.exp(z - top).sum(axis=-1, keepdims=True)))[..., 0].astype(
            np.float32
        )

    def threshold_range(self, n_classes: int | None = None) -> tuple[float, float]:
        return (-_F16_MAX, math.inf if n_classes is None else _F16_MAX + math.log(n_classes))
