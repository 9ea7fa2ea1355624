"""``gate``: a logistic regression, learned on the fit split, predicting from an exit's top-2 probabilities
whether its top-1 is right.

Features of the top-2 probabilities ``p1 >= p2`` (float32, as the cache stores them; every cache with k >= 2,
the bundled demo included), computed in float64: ``p1``, ``p1 - p2``, ``log p1``, the tail mass
``1 - (p1 + p2)`` and the top-2 entropy ``-(p1 log p1 + p2 log p2)``. Score = ``sigmoid(b + w . f)`` as
float32, the dot product summed feature by feature in a fixed order (no BLAS), so every side (search, runtime,
bundle) gets the same number from the same inputs.
:meth:`Gate.fit` learns ``w`` and ``b`` by a few Newton (IRLS) steps with a small L2 penalty on standardised
features, folded back so the exported params are plain: ``{"features": [...], "w": [...], "b": ...}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ContractError
from . import register_rule
from ._base import ExitRule, RuleInputs

__all__ = ["Gate", "FEATURES", "MIN_FIT_SAMPLES", "gate_features"]

FEATURES = ("p1", "margin", "log_p1", "tail", "entropy")
"""The features, in the order of ``w`` (recorded in the params so a reader can refuse another set)."""
MIN_FIT_SAMPLES = 50
_L2 = (
    1.0  # penalty on the standardised weights (not the bias): small against any sample that can fit
)
_STEPS = 30
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


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@register_rule
class Gate(ExitRule):
    """Score = ``sigmoid(b + w . gate_features(p))`` in [0, 1] (float32); ``w``, ``b`` learned by :meth:`fit`.

    ``Gate()`` is the unfitted rule (what it reads, its range); scoring needs ``w`` and ``b``.
    """

    name = "gate"
    reads = frozenset({"topk_probs"})
    k = 2
    learned = True

    def __init__(self, w: tuple[float, ...] | None = None, b: float = 0.0):
        self.w = None if w is None else tuple(float(x) for x in w)
        self.b = float(b)

    def _probs(self, inputs: RuleInputs) -> np.ndarray:
        p = inputs.probs()
        if p.ndim != 2 or p.shape[1] < self.k:
            raise ContractError(
                f"score 'gate' reads the top-{self.k} probabilities; these inputs carry "
                f"{p.shape[-1] if p.ndim else 0}"
            )
        return p

    def score(self, inputs: RuleInputs) -> np.ndarray:
        if self.w is None:
            raise ContractError("score 'gate' is not fitted: it needs its learned params (w, b)")
        f = gate_features(self._probs(inputs))
        z = np.full(f.shape[0], self.b)
        for i, w in enumerate(
            self.w
        ):  # a fixed order of float64 sums: the same number on every side
            z += w * f[:, i]
        return (1.0 / (1.0 + np.exp(-np.clip(z, -700.0, 700.0)))).astype(np.float32)

    def threshold_range(self, n_classes: int | None = None) -> tuple[float, float]:
        return (0.0, 1.0)

    def fit(self, inputs: RuleInputs, correct: np.ndarray) -> Gate:
        """A gate fitted to predict ``correct`` ``(n,)`` bool; a ContractError when it cannot be: fewer than
        :data:`MIN_FIT_SAMPLES` samples, one class only, non-finite inputs."""
        f = gate_features(self._probs(inputs))
        y = np.asarray(correct, dtype=bool).astype(np.float64)
        n = f.shape[0]
        if y.shape != (n,):
            raise ContractError(f"gate fit: {n} rows of inputs but correct has shape {y.shape}")
        if n < MIN_FIT_SAMPLES:
            raise ContractError(
                f"too few samples to fit a gate ({n}; it needs at least {MIN_FIT_SAMPLES})"
            )
        n_right = int(y.sum())
        if n_right in (0, n):
            which = "right" if n_right else "wrong"
            raise ContractError(
                f"the exit is {which} on all {n} fit samples: one class only, nothing to learn"
            )
        if not np.isfinite(f).all():
            raise ContractError("gate fit: non-finite top-k probabilities")
        w, b = _newton(f, y)
        if not (np.isfinite(w).all() and math.isfinite(b)):
            raise ContractError("gate fit did not converge to finite weights")
        return Gate(tuple(w.tolist()), b)

    def to_json(self) -> dict[str, Any]:
        if self.w is None:
            return {}
        return {"features": list(FEATURES), "w": list(self.w), "b": self.b}

    @classmethod
    def from_json(cls, params: Mapping[str, Any]) -> Gate:
        """A fitted gate from its params, each field checked (one line naming the field)."""
        if not params:
            raise ContractError(
                "score 'gate' needs its learned params (features, w, b); none given"
            )
        extra = sorted(set(params) - {"features", "w", "b"})
        if extra:
            raise ContractError(f"gate params: unknown field(s) {extra}")
        missing = [key for key in ("features", "w", "b") if key not in params]
        if missing:
            raise ContractError(f"gate params: missing {missing}")
        if params["features"] != list(FEATURES):
            raise ContractError(f"gate params.features: must be {list(FEATURES)}")
        w = params["w"]
        if not isinstance(w, list) or len(w) != len(FEATURES) or not all(_number(x) for x in w):
            raise ContractError(f"gate params.w: must be a list of {len(FEATURES)} finite numbers")
        if not _number(params["b"]):
            raise ContractError("gate params.b: must be a finite number")
        return cls(tuple(w), params["b"])


def _newton(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Penalised logistic regression by Newton steps on standardised features, folded back: ``(w, b)``."""
    mu, sd = f.mean(axis=0), f.std(axis=0)
    sd[sd < 1e-12] = 1.0
    x = np.column_stack([(f - mu) / sd, np.ones(f.shape[0])])
    penalty = np.full(x.shape[1], _L2)
    penalty[-1] = 0.0
    beta = np.zeros(x.shape[1])
    for _ in range(_STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -700.0, 700.0)))
        grad = x.T @ (p - y) + penalty * beta
        hess = (x * (p * (1.0 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    w = beta[:-1] / sd
    return w, float(beta[-1] - (w * mu).sum())
