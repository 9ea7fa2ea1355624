"""Quality indicators of a front ``F`` ``(n_configs, 2)`` = ``[error, relative_cost]``, both minimised.

Configured once, then called on ``F`` (pymoo's ``HV(ref_point=...)`` / ``IGDPlus(pf)`` shape). The
reference point is fixed at ``(1.0, 1.0)`` (error 100 %, the base model's cost) and there is **no
normalisation**: both objectives are already fractions, so numbers compare across methods, runs and
caches of the same model. Points at or beyond the reference point contribute nothing.
"""

from __future__ import annotations

import numpy as np

from ._validation import SearchError

__all__ = ["HV", "IGDPlus", "hypervolume", "igd_plus", "saving_at_drop"]


def _as_F(F, name: str = "F") -> np.ndarray:
    """``F`` as a finite float64 ``(n, 2)`` array; a single point ``(2,)`` is lifted."""
    try:
        arr = np.asarray(F, dtype=np.float64)
    except (TypeError, ValueError):
        raise SearchError(
            f"{name} must hold numbers [error, relative_cost]; got {F!r:.80}"
        ) from None
    if arr.ndim == 1 and arr.size in (0, 2):
        arr = arr.reshape(-1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise SearchError(
            f"{name} must have shape (n_configs, 2) = [error, relative_cost]; got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise SearchError(f"{name} contains NaN or infinite values")
    return arr


def _as_point(point, name: str) -> np.ndarray:
    """One point ``(2,)`` = ``[error, relative_cost]``, finite."""
    arr = _as_F(point, name)
    if arr.shape[0] != 1:
        raise SearchError(
            f"{name} must be one point (error, relative_cost); got {arr.shape[0]} points"
        )
    return arr[0]


def hypervolume(F, ref_point=(1.0, 1.0)) -> float:
    """Exact 2-D hypervolume dominated by ``F`` and bounded by ``ref_point`` (0.0 for an empty set)."""
    F = _as_F(F)
    ref = _as_point(ref_point, "ref_point")
    F = F[(F[:, 0] < ref[0]) & (F[:, 1] < ref[1])]
    if F.shape[0] == 0:
        return 0.0
    F = F[np.lexsort((F[:, 1], F[:, 0]))]  # by error, then cost
    keep = F[:, 1] < np.minimum.accumulate(np.concatenate([[np.inf], F[:-1, 1]]))
    F = F[keep]  # non-dominated: error up, cost strictly down
    widths = np.diff(np.concatenate([F[:, 0], [ref[0]]]))
    return float(np.sum(widths * (ref[1] - F[:, 1])))


def igd_plus(F, reference_front) -> float:
    """IGD+ of ``F`` to ``reference_front`` (mean over reference points of the dominance-aware
    distance to the nearest point of ``F``); ``inf`` for an empty ``F``."""
    F = _as_F(F)
    R = _as_F(reference_front, "reference_front")
    if R.shape[0] == 0:
        raise SearchError("reference_front is empty; IGD+ needs at least one reference point")
    if F.shape[0] == 0:
        return float("inf")
    d = np.maximum(F[None, :, :] - R[:, None, :], 0.0)  # (n_ref, n_configs, 2)
    return float(np.sqrt((d**2).sum(axis=-1)).min(axis=1).mean())


class HV:
    """Hypervolume with a fixed reference point (default ``(1.0, 1.0)``) and no normalisation.

    ``HV()(F)`` -> float; larger is better. Points not strictly better than the reference point in
    both objectives contribute nothing; an empty set gives 0.0.
    """

    def __init__(self, ref_point=(1.0, 1.0)):
        self.ref_point = tuple(float(v) for v in _as_point(ref_point, "ref_point"))

    def __call__(self, F) -> float:
        return hypervolume(F, self.ref_point)

    def __repr__(self) -> str:
        return f"HV(ref_point={self.ref_point})"


class IGDPlus:
    """IGD+ to a reference front ``(n_ref, 2)`` given once, no normalisation; smaller is better.

    ``IGDPlus(pf)(F)`` -> float; an empty set gives ``inf``.
    """

    def __init__(self, reference_front):
        self.reference_front = _as_F(reference_front, "reference_front")
        if self.reference_front.shape[0] == 0:
            raise SearchError("reference_front is empty; IGD+ needs at least one reference point")

    def __call__(self, F) -> float:
        return igd_plus(F, self.reference_front)

    def __repr__(self) -> str:
        return f"IGDPlus(<{self.reference_front.shape[0]} reference points>)"


def saving_at_drop(F, base_accuracy: float, max_drop: float) -> float | None:
    """Relative cost saved by the cheapest configuration within ``max_drop`` of ``base_accuracy``.

    ``F`` ``(n_configs, 2)`` and ``base_accuracy`` come from the same split (normally the holdout);
    ``max_drop`` is a fraction (0.005 = half a point). Returns ``1 - relative_cost`` of that
    configuration (negative if it costs more than the base), or None when none qualifies.
    """
    F = _as_F(F)
    if not isinstance(base_accuracy, (int, float, np.floating)) or not 0.0 <= base_accuracy <= 1.0:
        raise SearchError(f"base_accuracy must be a fraction in [0, 1]; got {base_accuracy!r}")
    if not isinstance(max_drop, (int, float, np.floating)) or not 0.0 <= max_drop <= 1.0:
        raise SearchError(
            f"max_drop must be a fraction in [0, 1] (0.005 = half a point); got {max_drop!r}"
        )
    ok = (1.0 - F[:, 0]) >= base_accuracy - max_drop - 1e-12
    return None if not ok.any() else float(1.0 - F[ok, 1].min())
