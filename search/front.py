"""``Front``: the result every engine returns, and queries on it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ._validation import SearchError
from .config import ExitConfig

__all__ = ["Front", "non_dominated", "cheapest_within", "most_accurate_within"]


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of ``F`` ``(n, 2)`` (minimised), cheapest first; duplicates once."""
    F = np.asarray(F, dtype=np.float64).reshape(-1, 2)
    if F.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((F[:, 0], F[:, 1]))  # by cost, then error
    err = F[order, 0]
    best_before = np.concatenate([[np.inf], np.minimum.accumulate(err)[:-1]])
    return order[err < best_before].astype(np.int64)


@dataclass
class Front:
    """Configurations with their objectives ``F`` ``(n_configs, 2)`` = ``[error, relative_cost]``."""

    configs: list[ExitConfig]
    F: np.ndarray
    method: str
    params: dict = field(default_factory=dict)
    n_evals: int = 0
    exec_time: float = 0.0
    message: str = ""

    def __post_init__(self):
        self.F = np.asarray(self.F, dtype=np.float64).reshape(-1, 2)
        if len(self.configs) != self.F.shape[0]:
            raise SearchError(
                f"Front: {len(self.configs)} configs but F has {self.F.shape[0]} rows"
            )

    def __len__(self) -> int:
        return len(self.configs)

    def take(self, idx) -> Front:
        idx = np.asarray(idx, dtype=np.int64)
        return replace(self, configs=[self.configs[i] for i in idx], F=self.F[idx])

    def pareto(self) -> Front:
        """The non-dominated subset, cheapest first."""
        return self.take(non_dominated(self.F))

    @property
    def accuracy(self) -> np.ndarray:
        return 1.0 - self.F[:, 0]

    @property
    def relative_cost(self) -> np.ndarray:
        return self.F[:, 1]


def cheapest_within(front: Front, max_drop: float, base_accuracy: float) -> int | None:
    """Index of the cheapest configuration whose accuracy >= base_accuracy - max_drop (a fraction), or None."""
    ok = np.flatnonzero(front.accuracy >= base_accuracy - max_drop - 1e-12)
    return None if ok.size == 0 else int(ok[np.argmin(front.relative_cost[ok])])


def most_accurate_within(front: Front, budget: float) -> int | None:
    """Index of the most accurate configuration with relative cost <= budget, or None."""
    ok = np.flatnonzero(front.relative_cost <= budget + 1e-12)
    return None if ok.size == 0 else int(ok[np.argmax(front.accuracy[ok])])
