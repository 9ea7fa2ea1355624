"""(exit, rule) alternatives at each position: how dp chooses an exit rule per exit.

dp already chooses among the head types standing at one position; with several rules it chooses among
(exit, rule) pairs the same way. :class:`RuleOptions` presents an :class:`~search.problem.ExitProblem` with
several ``rules`` as a problem whose "exits" are those pairs (option ``v = r * n_exits + e``: exit ``e`` deciding
with rule ``r``): every option has its own scores and the correctness and units of its exit, so the solver's
exact curves, costs and sweeps are those of the head types, unchanged; an option whose rule reads the partner exit
pays the partner's head (``CostTable.paired``) and exists only where the exit has a partner. A state maps back to an
:class:`~search.config.ExitConfig` with one rule per enabled exit (:meth:`config`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract import partner_exit, reads_partner
from contract.costs import CostTable

from ..config import ExitConfig

__all__ = ["RuleOptions"]


@dataclass(frozen=True)
class _OptionCosts(CostTable):
    """The options' per-unit costs with the problem's own base cost (a time table's is the measured base model,
    not its items' sum)."""

    base: float = 1.0

    @property
    def base_cost(self) -> float:
        return self.base


class RuleOptions:
    """The problem as dp sees it with (exit, rule) options (see the module docstring); what the solver reads of
    a problem: ``scores``, ``correct``, ``costs``, ``position_exits``, ``position_of_exit``, sizes, ``rule``
    (the one leave test), and per option its score ``bounds`` and :meth:`config` to map a state back."""

    def __init__(self, problem):
        self.base = problem
        self.rules = problem.rules
        E, m = problem.n_exits, len(problem.rules)
        self.cache, self.score, self.rule = problem.cache, problem.score, problem.rule
        self.n_samples = problem.n_samples
        self.n_exits, self.final_exit = m * E, problem.final_exit
        self.scores = np.concatenate([problem.scores_of(r) for r in self.rules])
        self.correct = np.tile(problem.correct, (m, 1))
        c = problem.unpaired
        needs = [problem.costs_of(range(E - 1), [r] * (E - 1)).needs for r in self.rules]
        self.costs = _OptionCosts(
            c.unit_costs, np.concatenate(needs), c.unit_names, c.objective, base=c.base_cost
        )
        # a rule reading the partner exit is an option only where the exit has one
        usable = [
            [
                not reads_partner(r) or partner_exit(problem.cache.exits, e) is not None
                for e in range(E)
            ]
            for r in self.rules
        ]
        # every early position, whatever ``score`` decides at (the problem's own lists are the exits it can)
        early = problem.cache.exits[:-1]
        at = {
            p: [
                r * E + e
                for r in range(m)
                for e, x in enumerate(early)
                if x.position == p and usable[r][e]
            ]
            for p in sorted({x.position for x in early})
        }
        self.positions = [p for p, options in at.items() if options]
        self.n_positions = len(self.positions)
        self.position_exits = [at[p] for p in self.positions]
        self.position_of_exit = {v: j for j, ex in enumerate(self.position_exits) for v in ex}
        n_classes = problem.cache.n_classes
        ranges = [problem.rule_objects[r].threshold_range(n_classes) for r in self.rules]
        self.bounds = {v: ranges[v // E] for ex in self.position_exits for v in ex}

    def option(self, exit_index: int, rule: str) -> int:
        """The option of ``exit_index`` deciding with ``rule``."""
        return self.rules.index(rule) * self.base.n_exits + exit_index

    def config(self, options, thresholds) -> ExitConfig:
        """The configuration enabling ``options`` (execution order) at ``thresholds``."""
        E = self.base.n_exits
        return self.base.config(  # with the params the problem learned for its learned exits
            [v % E for v in options], thresholds, [self.rules[v // E] for v in options]
        )
