"""``gate``: a logistic regression (:mod:`contract.rules._logistic`), learned on the fit split, predicting from an
exit's top-2 probabilities whether leaving there is harmless.

Features of the top-2 probabilities ``p1 >= p2`` (float32, as the cache stores them; every cache with k >= 2,
the bundled demo included), computed in float64: ``p1``, ``p1 - p2``, ``log p1``, the tail mass
``1 - (p1 + p2)`` and the top-2 entropy ``-(p1 log p1 + p2 log p2)``.
"""

from __future__ import annotations

import numpy as np

from . import register_rule
from ._base import RuleInputs
from ._logistic import MIN_FIT_SAMPLES, LogisticGate

__all__ = ["Gate", "FEATURES", "MIN_FIT_SAMPLES", "gate_features"]

FEATURES = ("p1", "margin", "log_p1", "tail", "entropy")
"""The features, in the order of ``w`` (recorded in the params so a reader can refuse another set)."""
_TINY = 1e-30


def gate_features(probs: np.ndarray) -> np.ndarray:
    """The features ``(n, 5)`` float64 of top-k probabilities ``(n, k >= 2)`` (descending; first two used)."""
    p = np.asarray(probs, dtype=np.float32)[:, :2].astype(np.float64)
    logp = np.log(np.maximum(p, _TINY))
    out = np.empty((p.shape[0], len(FEATURES)))
    out[:, 0] = p[:, 0]
    out[:, 1] = p[:, 0] - p[:, 1]
    out[:, 2] = logp[:, 0]
    out[:, 3] = 1.0 - (p[:, 0] + p[:, 1])
    out[:, 4] = -(p[:, 0] * logp[:, 0] + p[:, 1] * logp[:, 1])
    return out


@register_rule
class Gate(LogisticGate):
    """Score = ``sigmoid(b + w . gate_features(p))`` in [0, 1] (float32); ``w``, ``b`` learned by :meth:`fit`."""

    name = "gate"
    reads = frozenset({"topk_probs"})
    k = 2
    features = FEATURES

    def feature_values(self, inputs: RuleInputs) -> np.ndarray:
        return gate_features(self._probs(inputs))
