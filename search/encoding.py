"""The mixed encoding the population engines share (``nsga2``, ``optuna``).

Per position ``j`` two variables: a head ``h_j`` in ``{0, ..., T_j}`` (0 = no exit, ``t`` = the
``t``-th head type ``problem.position_exits[j][t - 1]``) and a threshold variable ``x_j``:

- ``float``: ``x_j`` is the threshold itself, in ``[lower_j, upper_j]``: just below the smallest
  and exactly the largest score of the position's exits (below: every sample leaves; at the top:
  none does). Any threshold outside acts like the nearer bound, so clipping loses nothing.
- ``quantile``: ``x_j`` in ``[0, 1]`` picks ``k = floor(x_j * (n + 1))`` (clipped to ``n``) in the
  chosen exit's sorted search-split scores ``s_(1) <= ... <= s_(n)``; the threshold is ``s_(k)``
  (``k = 0``: just below ``s_(1)``), so about a fraction ``x_j`` of the split does *not* leave there.
  Scale-free and the same for every exit; encoding a threshold and decoding it back is exact.

Arrays: ``H`` ``(n_configs, n_positions)`` int and ``X`` ``(n_configs, n_positions)`` float.
"""

from __future__ import annotations

import numpy as np

from contract import float32_cut

from ._validation import SearchError, check_scalar
from .config import ExitConfig
from .scores import score_range

__all__ = ["ENCODINGS", "MixedEncoding", "constraint_values", "check_constraints"]

ENCODINGS = ("float", "quantile")


def _below(x: float) -> float:
    """The largest float32 value below ``x`` (scores are float32 and compared in float32)."""
    return float(np.nextafter(np.float32(x), np.float32(-np.inf)))


class MixedEncoding:
    """Head choice + threshold variable per position of ``problem`` (see module docstring)."""

    def __init__(self, problem, kind: str = "quantile"):
        if kind not in ENCODINGS:
            raise SearchError(f"unknown encoding {kind!r}; choose one of {list(ENCODINGS)}")
        self.problem, self.kind = problem, kind
        self.n_positions = problem.n_positions
        self.n_heads = np.array([len(ex) for ex in problem.position_exits], dtype=np.int64)  # T_j
        self.lo, self.hi = score_range(problem.score, problem.cache.n_classes)
        scores = problem.scores
        lower = [
            max(self.lo, _below(min(float(scores[e].min()) for e in ex)))
            for ex in problem.position_exits
        ]
        upper = [max(float(scores[e].max()) for e in ex) for ex in problem.position_exits]
        self.lower, self.upper = np.array(lower), np.array(upper)  # float thresholds per position
        self._tables: dict[int, np.ndarray] = {}  # exit -> (n_samples + 1,)

    # -- bounds --------------------------------------------------------------------------------
    @property
    def x_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds ``(n_positions,)`` of the threshold variables."""
        if self.kind == "float":
            return self.lower.copy(), self.upper.copy()
        return np.zeros(self.n_positions), np.ones(self.n_positions)

    def choice_names(self, j: int) -> list[str]:
        """Names of the options at position ``j``: ``"none"``, then the exits' names."""
        return ["none"] + [self.problem.cache.exits[e].name for e in self.problem.position_exits[j]]

    # -- decoding ------------------------------------------------------------------------------
    def _table(self, e: int) -> np.ndarray:
        """Thresholds by quantile index for exit ``e``: just below the minimum, then sorted scores."""
        t = self._tables.get(e)
        if t is None:
            s = np.sort(self.problem.scores[e]).astype(np.float64)
            t = self._tables[e] = np.concatenate([[max(self.lo, _below(s[0]))], s])
        return t

    def thresholds(self, H: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Real thresholds ``(n_configs, n_positions)``; disabled positions get the upper bound."""
        H, X = self._check(H, X)
        out = np.broadcast_to(self.upper, H.shape).copy()
        if self.kind == "float":
            on = H > 0
            out[on] = np.clip(X, self.lower, self.upper)[on]
            return out
        n = self.problem.n_samples
        k = np.clip(np.floor(X * (n + 1)), 0, n).astype(np.int64)
        for j, exits in enumerate(self.problem.position_exits):
            for t, e in enumerate(exits, start=1):
                rows = np.flatnonzero(H[:, j] == t)
                if rows.size:
                    out[rows, j] = self._table(e)[k[rows, j]]
        return out

    def decode(self, H: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(choice, thresholds)`` as :meth:`ExitProblem.evaluate_arrays` takes them."""
        H, X = self._check(H, X)
        return H - 1, self.thresholds(H, X)

    def evaluate(self, H: np.ndarray, X: np.ndarray) -> np.ndarray:
        """``F`` ``(n_configs, 2)`` of encoded configurations (counted by the problem)."""
        return self.problem.evaluate_arrays(*self.decode(H, X))

    def to_configs(self, H: np.ndarray, X: np.ndarray) -> list[ExitConfig]:
        """The ExitConfigs of encoded rows."""
        choice, thr = self.decode(H, X)
        out = []
        for c, t in zip(choice, thr, strict=True):
            exits, thresholds = self.problem.decode(c, t)
            out.append(self.problem.config(exits, thresholds))
        return out

    # -- encoding ------------------------------------------------------------------------------
    def encode(self, configs) -> tuple[np.ndarray, np.ndarray]:
        """``(H, X)`` of ExitConfigs; decoding them gives configurations that behave identically."""
        configs = list(configs)
        H = np.zeros((len(configs), self.n_positions), dtype=np.int64)
        X = np.broadcast_to(self.x_bounds[1], H.shape).copy()
        n = self.problem.n_samples
        for i, cfg in enumerate(configs):
            if cfg.score != self.problem.score:
                raise SearchError(
                    f"config uses score {cfg.score!r} but the problem scores with {self.problem.score!r}"
                )
            for e, thr in zip(cfg.exits, cfg.thresholds, strict=True):
                j = self.problem.position_of_exit.get(e)
                if j is None:
                    raise SearchError(f"exit index {e} is not an early exit of this problem")
                H[i, j] = self.problem.position_exits[j].index(e) + 1
                if self.kind == "float":
                    X[i, j] = min(max(thr, self.lower[j]), self.upper[j])
                else:  # k = number of scores <= thr (those that stay); the middle of k's interval decodes to k
                    k = int(np.searchsorted(self._table(e)[1:], float32_cut(thr), side="right"))
                    X[i, j] = min((k + 0.5) / (n + 1), 1.0)
        return H, X

    def _check(self, H, X) -> tuple[np.ndarray, np.ndarray]:
        H, X = np.asarray(H, dtype=np.int64), np.asarray(X, dtype=np.float64)
        shape = (H.shape[0] if H.ndim == 2 else -1, self.n_positions)
        if H.ndim != 2 or H.shape != X.shape or H.shape[1] != self.n_positions:
            raise SearchError(f"H and X must both be {shape}; got {H.shape} and {X.shape}")
        if ((H < 0) | (H > self.n_heads)).any():
            raise SearchError(f"head choices must lie in [0, n_heads[j]] = {self.n_heads.tolist()}")
        return H, X


def check_constraints(max_drop: float | None, max_cost: float | None) -> None:
    """Raise SearchError unless ``max_drop`` is a fraction in [0, 1] and ``max_cost`` is > 0 (None: absent)."""
    if max_drop is not None:
        check_scalar(max_drop, "max_drop", min_val=0.0, max_val=1.0)
    if max_cost is not None:
        check_scalar(max_cost, "max_cost", min_val=0.0)
        if max_cost == 0:
            raise SearchError("`max_cost` == 0, must be > 0 (a relative cost such as 0.6)")


def constraint_values(
    F: np.ndarray,
    base_error: float,
    *,
    max_drop: float | None = None,
    max_cost: float | None = None,
) -> np.ndarray:
    """Inequality constraints ``G`` ``(n_configs, n_constr)``, feasible where ``G <= 0``.

    ``max_drop`` (a fraction: 0.005 = half a point of accuracy below the base model) gives
    ``error - base_error - max_drop``; ``max_cost`` (relative cost) gives ``relative_cost - max_cost``.
    """
    F = np.asarray(F, dtype=np.float64).reshape(-1, 2)
    cols = []
    if max_drop is not None:
        cols.append(F[:, 0] - base_error - max_drop - 1e-12)
    if max_cost is not None:
        cols.append(F[:, 1] - max_cost - 1e-12)
    return np.stack(cols, axis=1) if cols else np.zeros((F.shape[0], 0))
