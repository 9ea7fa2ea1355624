"""A cap on the exits a configuration enables (``max_exits``): the check, and the repair of configurations
found by engines that do not search under the cap themselves."""

from __future__ import annotations

import numpy as np

from contract import float32_cut

from .._validation import SearchError
from ..config import ExitConfig

__all__ = ["check_max_exits", "cap_config", "n_exit_positions"]


def n_exit_positions(problem) -> int:
    """The early positions of ``problem``'s cache: a cap up to their number is valid, whichever positions the
    problem's score can decide at (a rule reading its partner exit: not the first)."""
    return len({e.position for e in problem.cache.exits[:-1]})


def check_max_exits(max_exits: int | None, n_positions: int, *, name: str = "max_exits") -> None:
    """Raise SearchError unless ``max_exits`` is None or an integer in [1, ``n_positions``]."""
    if max_exits is None:
        return
    if isinstance(max_exits, bool) or not isinstance(max_exits, (int, np.integer)) or max_exits < 1:
        raise SearchError(f"{name} must be an integer >= 1 (got {max_exits!r})")
    if n_positions and max_exits > n_positions:
        raise SearchError(
            f"{name} {max_exits} is above the number of exit positions ({n_positions}); "
            f"choose 1 to {n_positions}"
        )


def cap_config(problem, config: ExitConfig, max_exits: int) -> ExitConfig:
    """``config`` with at most ``max_exits`` exits: those at which the most samples of ``problem``'s split
    leave are kept (ties: the earlier), with their thresholds; the others are disabled."""
    if len(config.exits) <= max_exits:
        return config
    # each exit keeps its own rule (and the params the problem learned for it)
    rules = config.rule_names
    remaining = np.ones(problem.n_samples, dtype=bool)
    served = []
    for e, t, r in zip(config.exits, config.thresholds, rules, strict=True):
        leave = remaining & (problem.scores_of(r)[e] > float32_cut(t))
        served.append(int(np.count_nonzero(leave)))
        remaining &= ~leave
    keep = sorted(sorted(range(len(served)), key=lambda i: -served[i])[:max_exits])
    return problem.config(
        (config.exits[i] for i in keep),
        (config.thresholds[i] for i in keep),
        rules=(rules[i] for i in keep),
    )
