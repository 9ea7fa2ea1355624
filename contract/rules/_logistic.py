"""The learned gates' shared part: a penalised logistic regression on a rule's features, learned on the fit
split to predict that leaving at an exit does no harm, and scored the same way on every side.

A gate (``gate``, ``partner_gate``) names its features (:attr:`LogisticGate.features`, recorded in its params so a
reader can refuse another set) and computes them in float64 from what the cache stores
(:meth:`LogisticGate.feature_values`). Score = ``sigmoid(b + w . f)`` as float32, the dot product summed feature by
feature in a fixed order (no BLAS), so every side (search, runtime, bundle) gets the same number from the same
inputs. :meth:`LogisticGate.fit` learns ``w`` and ``b`` by a few Newton (IRLS) steps with a small L2 penalty on
standardised features, folded back so the exported params are plain: ``{"features": [...], "w": [...], "b": ...}``.

The target is the paired loss's: leaving at the exit is *harmless* for a sample when the exit's top-1 is right or
the final exit's is wrong (its drop is 0 or negative); a gate ranks samples by how likely leaving them costs
nothing, where a confidence score ranks them by how likely the exit is right.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ..errors import ContractError
from ._base import ExitRule, RuleInputs

__all__ = ["LogisticGate", "MIN_FIT_SAMPLES", "harmless"]

MIN_FIT_SAMPLES = 50
# penalty on the standardised weights (not the bias): small against any sample that can fit
_L2 = 1.0
_STEPS = 30


def harmless(exit_right: np.ndarray, final_right: np.ndarray) -> np.ndarray:
    """The gates' target ``(n,)`` bool: leaving at the exit costs nothing (its top-1 is right, or the final
    exit's is wrong)."""
    return np.asarray(exit_right, dtype=bool) | ~np.asarray(final_right, dtype=bool)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class LogisticGate(ExitRule):
    """Score = ``sigmoid(b + w . features(inputs))`` in [0, 1] (float32); ``w``, ``b`` learned by :meth:`fit`.

    ``cls()`` is the unfitted rule (what it reads, its range); scoring needs ``w`` and ``b``. Subclasses set
    :attr:`features` and implement :meth:`feature_values`.
    """

    features: ClassVar[tuple[str, ...]]
    learned = True

    def __init__(self, w: tuple[float, ...] | None = None, b: float = 0.0):
        self.w = None if w is None else tuple(float(x) for x in w)
        self.b = float(b)

    def feature_values(self, inputs: RuleInputs) -> np.ndarray:
        """The features ``(n, len(features))`` float64 of ``inputs``, in the order of :attr:`features`."""
        raise NotImplementedError

    def _probs(self, inputs: RuleInputs) -> np.ndarray:
        p = inputs.probs()
        if p.ndim != 2 or p.shape[1] < self.k:
            raise ContractError(
                f"score {self.name!r} reads the top-{self.k} probabilities; these inputs carry "
                f"{p.shape[-1] if p.ndim else 0}"
            )
        return p

    def score(self, inputs: RuleInputs) -> np.ndarray:
        if self.w is None:
            raise ContractError(
                f"score {self.name!r} is not fitted: it needs its learned params (w, b)"
            )
        f = self.feature_values(inputs)
        z = np.full(f.shape[0], self.b)
        # a fixed order of float64 sums: the same number on every side
        for i, w in enumerate(self.w):
            z += w * f[:, i]
        return (1.0 / (1.0 + np.exp(-np.clip(z, -700.0, 700.0)))).astype(np.float32)

    def threshold_range(self, n_classes: int | None = None) -> tuple[float, float]:
        return (0.0, 1.0)

    def fit(self, inputs: RuleInputs, target: np.ndarray) -> LogisticGate:
        """A gate fitted to predict ``target`` ``(n,)`` bool (:func:`harmless`); a ContractError when it cannot be:
        fewer than :data:`MIN_FIT_SAMPLES` samples, one class only, non-finite inputs."""
        f = self.feature_values(inputs)
        y = np.asarray(target, dtype=bool).astype(np.float64)
        n = f.shape[0]
        if y.shape != (n,):
            raise ContractError(f"gate fit: {n} rows of inputs but the target has shape {y.shape}")
        if n < MIN_FIT_SAMPLES:
            raise ContractError(
                f"too few samples to fit a gate ({n}; it needs at least {MIN_FIT_SAMPLES})"
            )
        n_harmless = int(y.sum())
        if n_harmless in (0, n):
            which = "harmless" if n_harmless else "harmful"
            raise ContractError(
                f"leaving at the exit is {which} on all {n} fit samples: one class only, nothing to learn"
            )
        if not np.isfinite(f).all():
            raise ContractError("gate fit: non-finite top-k probabilities")
        w, b = _newton(f, y)
        if not (np.isfinite(w).all() and math.isfinite(b)):
            raise ContractError("gate fit did not converge to finite weights")
        return type(self)(tuple(w.tolist()), b)

    def to_json(self) -> dict[str, Any]:
        if self.w is None:
            return {}
        return {"features": list(self.features), "w": list(self.w), "b": self.b}

    @classmethod
    def from_json(cls, params: Mapping[str, Any]) -> LogisticGate:
        """A fitted gate from its params, each field checked (one line naming the field)."""
        if not params:
            raise ContractError(
                f"score {cls.name!r} needs its learned params (features, w, b); none given"
            )
        extra = sorted(set(params) - {"features", "w", "b"})
        if extra:
            raise ContractError(f"{cls.name} params: unknown field(s) {extra}")
        missing = [key for key in ("features", "w", "b") if key not in params]
        if missing:
            raise ContractError(f"{cls.name} params: missing {missing}")
        if params["features"] != list(cls.features):
            raise ContractError(f"{cls.name} params.features: must be {list(cls.features)}")
        w, n = params["w"], len(cls.features)
        if not isinstance(w, list) or len(w) != n or not all(_number(x) for x in w):
            raise ContractError(f"{cls.name} params.w: must be a list of {n} finite numbers")
        if not _number(params["b"]):
            raise ContractError(f"{cls.name} params.b: must be a finite number")
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
