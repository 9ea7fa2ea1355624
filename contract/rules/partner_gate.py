"""``partner_gate``: the learned gate of ``gate`` reading this exit's partner too (the exit of the same head type one
position earlier, :func:`~contract.rules.partner_exit`): what an earlier exit said about the sample.

Features, in float64 from what the cache stores: the five of ``gate`` (this exit's top-2 probabilities), then the
partner's top-1 probability ``q1`` and margin ``q1 - q2``, whether the two exits' top-1 classes agree (1 or 0), and
the partner's probability of this exit's top-1 class when it is among the partner's top-2 (else 0).
"""

from __future__ import annotations

import numpy as np

from . import register_rule
from ._base import RuleInputs
from ._logistic import LogisticGate
from .gate import FEATURES as OWN
from .gate import gate_features

__all__ = ["PartnerGate", "FEATURES"]

FEATURES = (*OWN, "partner_p1", "partner_margin", "agree", "partner_p_of_top1")
"""The features, in the order of ``w`` (recorded in the params so a reader can refuse another set)."""


@register_rule
class PartnerGate(LogisticGate):
    """Score = ``sigmoid(b + w . f)`` in [0, 1] (float32) of this exit's and its partner's top-2."""

    name = "partner_gate"
    reads = frozenset({"topk_probs", "partner"})
    k = 2
    features = FEATURES

    def feature_values(self, inputs: RuleInputs) -> np.ndarray:
        ids, partner_ids, partner_probs = inputs.partner()
        q = np.asarray(partner_probs, dtype=np.float32)[:, :2].astype(np.float64)
        top = ids[:, :1]
        out = np.empty((q.shape[0], len(FEATURES)))
        out[:, : len(OWN)] = gate_features(self._probs(inputs))
        out[:, len(OWN)] = q[:, 0]
        out[:, len(OWN) + 1] = q[:, 0] - q[:, 1]
        out[:, len(OWN) + 2] = ids[:, 0] == partner_ids[:, 0]
        out[:, len(OWN) + 3] = np.where(partner_ids[:, :2] == top, q, 0.0).sum(axis=1)
        return out
