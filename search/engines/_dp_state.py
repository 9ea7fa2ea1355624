"""The dp engine's state bookkeeping: a state is ``(slots, taus)`` per position of one problem; its
configuration, its totals and what one position sees from the rest of it."""

from __future__ import annotations

import numpy as np

from ..config import ExitConfig
from ..scores import score_range
from ._dp_curve import Context, descending_order
from ._rule_options import RuleOptions

__all__ = ["DPState"]


class DPState:
    """States of one :class:`ExitProblem`: ``slots[j]`` indexes ``problem.position_exits[j]`` (-1 =
    disabled), ``taus[j]`` is its threshold. Each early exit's samples are sorted by score once."""

    def __init__(self, problem, *, max_exits: int | None = None):
        self.lo, self.hi = score_range(problem.score, problem.cache.n_classes)
        self.options = RuleOptions(problem) if len(getattr(problem, "rules", ())) > 1 else None
        problem = (
            self.options or problem
        )  # several rules: (exit, rule) options stand at each position
        self.problem = problem
        self.max_exits = max_exits
        self.n, self.J = problem.n_samples, problem.n_positions
        self.final = problem.final_exit
        self.base_cost = problem.costs.base_cost
        self.wrong = ~problem.correct  # (n_exits, n) bool
        self.exit_dtype = np.int16 if problem.n_exits <= np.iinfo(np.int16).max else np.int32
        self.order, self.sorted_scores, self.sorted_wrong = {}, {}, {}
        self.bounds = {e: (self.lo, self.hi) for ex in problem.position_exits for e in ex}
        if self.options is not None:
            self.bounds = self.options.bounds
        for ex in problem.position_exits:
            for e in ex:
                o = self.order[e] = descending_order(problem.scores[e])
                self.sorted_scores[e] = problem.scores[e][o]
                self.sorted_wrong[e] = self.wrong[e][o].view(np.int8)
        self._lookups: dict[tuple, np.ndarray] = {}

    # -- configurations -----------------------------------------------------------------------
    def empty_state(self) -> tuple[np.ndarray, np.ndarray]:
        return np.full(self.J, -1, dtype=np.int64), np.full(self.J, self.hi, dtype=np.float64)

    def exit_of(self, j: int, slot: int) -> int:
        return self.problem.position_exits[j][slot]

    def enabled(self, slots) -> list[int]:
        return [self.exit_of(j, s) for j, s in enumerate(slots) if s >= 0]

    def cost_lookup(self, slots) -> np.ndarray:
        """Cost of leaving at each enabled exit (and the final one) under ``slots``; 0 elsewhere."""
        key = tuple(int(s) for s in slots)
        lookup = self._lookups.get(key)
        if lookup is None:
            if len(self._lookups) > 4096:
                self._lookups.clear()
            en = self.enabled(slots)
            lookup = np.zeros(self.problem.n_exits)
            lookup[en + [self.final]] = self.problem.costs.exit_costs(en)
            self._lookups[key] = lookup
        return lookup

    def state_of(self, config: ExitConfig) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`to_config`."""
        slots, taus = self.empty_state()
        for e, t, r in zip(config.exits, config.thresholds, config.rule_names, strict=True):
            e = e if self.options is None else self.options.option(e, r)
            j = self.problem.position_of_exit[e]
            slots[j], taus[j] = self.problem.position_exits[j].index(e), t
        return slots, taus

    def to_config(self, slots, taus) -> ExitConfig:
        pairs = [(self.exit_of(j, s), float(taus[j])) for j, s in enumerate(slots) if s >= 0]
        if self.options is not None:
            return self.options.config([e for e, _ in pairs], [t for _, t in pairs])
        return self.problem.config((e for e, _ in pairs), (t for _, t in pairs))

    def _passes(self, j: int, slots, taus) -> tuple[int, np.ndarray]:
        """The exit enabled at position j and the samples whose score there is above its threshold."""
        e = self.exit_of(j, slots[j])
        return e, self.problem.rule.leaves(self.problem.scores[e], taus[j])

    def _leave(
        self, j: int, slots, taus, remaining: np.ndarray, lookup: np.ndarray
    ) -> tuple[int, float]:
        """Let the remaining samples that pass position j leave (``remaining`` is updated in place);
        return the errors and summed cost of those that left."""
        if slots[j] < 0:
            return 0, 0.0
        e, leave = self._passes(j, slots, taus)
        leave &= remaining
        k = int(np.count_nonzero(leave))
        remaining &= ~leave
        return int(np.count_nonzero(leave & self.wrong[e])), lookup[e] * k

    def totals(self, slots, taus) -> tuple[int, float]:
        """Errors (count) and summed cost of a state on the whole split."""
        lookup = self.cost_lookup(slots)
        remaining = np.ones(self.n, dtype=bool)
        err, cost = 0, 0.0
        for j in range(self.J):
            de, dc = self._leave(j, slots, taus, remaining, lookup)
            err, cost = err + de, cost + dc
        k = int(np.count_nonzero(remaining))
        err += int(np.count_nonzero(remaining & self.wrong[self.final]))
        return err, cost + lookup[self.final] * k

    def context(self, slots, taus, j: int) -> Context:
        """What position ``j`` sees from the rest of the state, computed afresh."""
        lookup = self.cost_lookup(slots)
        remaining = np.ones(self.n, dtype=bool)
        err, cost = 0, 0.0
        for i in range(j):
            de, dc = self._leave(i, slots, taus, remaining, lookup)
            err, cost = err + de, cost + dc
        nxt = np.full(self.n, self.final, dtype=self.exit_dtype)
        go_wrong = self.wrong[self.final].copy()
        for i in reversed(range(j + 1, self.J)):
            self._go_on(i, slots, taus, nxt, go_wrong)
        return Context(remaining, nxt, go_wrong, err, cost)

    def _go_on(self, j, slots, taus, nxt, go_wrong) -> None:
        """Samples passing position j's enabled exit now leave there when they reach it (in place)."""
        if slots[j] >= 0:
            e, leave = self._passes(j, slots, taus)
            nxt += (e - nxt) * leave  # np.where, but faster
            go_wrong &= ~leave
            go_wrong |= leave & self.wrong[e]
