"""The Pareto front of every configuration of a small problem over its rules: what dp is compared with."""
from __future__ import annotations

import itertools

import numpy as np

from search import ExitProblem
from search.front import non_dominated


def brute_force_front(problem: ExitProblem) -> np.ndarray:
    """The Pareto front of every configuration: per position none, or any (rule, threshold between scores)."""
    options = []
    for ex in problem.position_exits:
        here = [None]
        for e in ex:
            for r in problem.rules:
                s = np.unique(problem.scores_of(r)[e].astype(np.float64))
                cuts = np.concatenate([(s[:-1] + s[1:]) / 2, [s[0] - 1e-3]])
                here += [(e, r, float(t)) for t in cuts]
        options.append(here)
    F = []
    for combo in itertools.product(*options):
        on = [o for o in combo if o is not None]
        F.append(problem._objectives([o[0] for o in on], [o[2] for o in on], [o[1] for o in on]))
    F = np.array(F)
    return F[non_dominated(F)]
