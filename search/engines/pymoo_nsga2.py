"""NSGA-II (pymoo) on the mixed encoding of :mod:`search.encoding` (engine ``nsga2``).

Deb et al., "A fast and elitist multiobjective genetic algorithm: NSGA-II", IEEE TEC 2002; the
implementation is pymoo's (Blank & Deb, IEEE Access 2020), imported lazily. Variables are real:
per position a head variable in ``[-0.5, T_j + 0.5]`` rounded to ``{0..T_j}`` by a repair (0 = no
exit) and a threshold variable (float or quantile encoding); SBX + polynomial mutation. Whole
populations go to ``ExitProblem.evaluate_arrays`` in one call. Constraints (maximum accuracy drop,
maximum relative cost) are pymoo inequality constraints. The engine keeps an archive of every
feasible non-dominated configuration it evaluated and returns it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_scalar
from ..encoding import MixedEncoding, check_constraints, constraint_values
from . import register_engine
from ._base import BaseEngine, Candidates
from ._population import Archive, base_within_constraints, dp_front, import_optional

__all__ = ["NSGA2Engine"]

DEFAULT_GENERATIONS = 100


def _pymoo_problem(encoding: MixedEncoding, base_error: float, max_drop, max_cost, n_constr: int):
    """A vectorised pymoo Problem over ``[h_0..h_{J-1}, x_0..x_{J-1}]`` handing populations to the evaluator."""
    problem_base: Any = import_optional("pymoo.core.problem", "nsga2", "pymoo").Problem
    J = encoding.n_positions
    xlo, xhi = encoding.x_bounds

    class _Problem(problem_base):
        def __init__(self):
            super().__init__(
                n_var=2 * J,
                n_obj=2,
                n_ieq_constr=n_constr,
                xl=np.concatenate([np.full(J, -0.5), xlo]),
                xu=np.concatenate([encoding.n_heads + 0.5, xhi]),
                vtype=float,
            )

        def _evaluate(self, x, out, *args, **kwargs):
            F = encoding.evaluate(_heads(x, encoding), x[:, J:])
            out["F"] = F
            if n_constr:
                out["G"] = constraint_values(F, base_error, max_drop=max_drop, max_cost=max_cost)

    return _Problem()


def _heads(x: np.ndarray, encoding: MixedEncoding) -> np.ndarray:
    """Head variables rounded to ``{0..T_j}``."""
    return np.clip(np.rint(x[:, : encoding.n_positions]), 0, encoding.n_heads).astype(np.int64)


def _rounding_repair(encoding: MixedEncoding):
    repair_base: Any = import_optional("pymoo.core.repair", "nsga2", "pymoo").Repair

    class _RoundHeads(repair_base):
        def _do(self, problem, X, **kwargs):
            X = np.array(X, dtype=float)
            X[:, : encoding.n_positions] = _heads(X, encoding)
            return X

    return _RoundHeads()


@register_engine
class NSGA2Engine(BaseEngine):
    """NSGA-II over head choice + threshold per position (see module docstring).

    Options: ``pop_size``; ``n_gen`` generations (None: until the budget; with no budget either,
    100 generations); ``encoding`` ``'quantile'`` or ``'float'``; constraints ``max_drop`` (accuracy
    drop below the base model as a fraction, 0.005 = half a point) and ``max_cost`` (relative cost);
    ``seed_with_dp`` puts the dp engine's front into the initial population. ``history_`` holds
    ``(evaluations, hypervolume of the archive)`` after every generation.
    """

    name = "nsga2"

    def __init__(
        self,
        *,
        pop_size: int = 100,
        n_gen: int | None = None,
        encoding: str = "quantile",
        max_drop: float | None = None,
        max_cost: float | None = None,
        seed_with_dp: bool = False,
    ):
        self.pop_size = pop_size
        self.n_gen = n_gen
        self.encoding = encoding
        self.max_drop = max_drop
        self.max_cost = max_cost
        self.seed_with_dp = seed_with_dp

    def _base_only(self, problem) -> Candidates:
        return base_within_constraints(
            super()._base_only(problem), problem, self.max_drop, self.max_cost
        )

    def _check(self) -> None:
        check_scalar(self.pop_size, "pop_size", min_val=2, integer=True)
        if self.n_gen is not None:
            check_scalar(self.n_gen, "n_gen", min_val=1, integer=True)
        check_constraints(self.max_drop, self.max_cost)

    def _run(self, problem, budget, rng, callback):
        self._check()
        nsga2 = import_optional("pymoo.algorithms.moo.nsga2", "nsga2", "pymoo")
        termination = import_optional("pymoo.core.termination", "nsga2", "pymoo")
        enc = MixedEncoding(problem, self.encoding)
        n_constr = (self.max_drop is not None) + (self.max_cost is not None)
        base_error = problem.base.error
        pproblem = _pymoo_problem(enc, base_error, self.max_drop, self.max_cost, n_constr)
        X0, note, seeds = self._initial(enc, problem, rng)
        algo = nsga2.NSGA2(
            pop_size=self.pop_size,
            sampling=X0,
            repair=_rounding_repair(enc),
            eliminate_duplicates=True,
        )
        algo.setup(
            pproblem,
            termination=termination.NoTermination(),
            seed=int(rng.integers(2**31)),
            verbose=False,
        )
        n_gen = self.n_gen
        if n_gen is None and budget.max_evals is None and budget.max_seconds is None:
            n_gen = DEFAULT_GENERATIONS
        archive, evals0, gens = Archive(enc.n_positions), problem.n_evals, 0
        if seeds is not None:  # all of dp's front, exact, so the result never falls below it
            Hs, Xs, Fs = seeds
            G = constraint_values(Fs, base_error, max_drop=self.max_drop, max_cost=self.max_cost)
            archive.add(Hs, Xs, Fs, np.all(G <= 0, axis=1))
        self.history_: list[tuple[int, float]] = []
        while (n_gen is None or gens < n_gen) and not budget.exhausted(problem):
            pop = algo.ask()
            left = budget.evals_left(problem)
            if left < len(pop):
                pop = pop[: int(left)]
            algo.evaluator.eval(pproblem, pop)
            algo.tell(infills=pop)
            gens += 1
            x, F = pop.get("X"), pop.get("F")
            feasible = (
                np.ones(len(pop), dtype=bool) if not n_constr else (pop.get("G") <= 0).all(axis=1)
            )
            archive.add(_heads(x, enc), x[:, enc.n_positions :], F, feasible)
            self.history_.append((problem.n_evals - evals0, archive.hypervolume()))
            if callback is not None:
                callback(self, problem)
        configs = enc.to_configs(archive.H, archive.X)
        msg = f"{gens} generations of up to {self.pop_size}, {problem.n_evals - evals0} evaluations{note}"
        if not configs:
            msg += "; no feasible configuration found"
        return Candidates(configs, archive.F, msg)

    def _initial(
        self, enc: MixedEncoding, problem, rng: np.random.Generator
    ) -> tuple[np.ndarray, str, tuple | None]:
        """Initial population ``(pop_size, 2 J)``: dp's front (spread along cost) when asked, then random rows; and
        dp's whole front encoded ``(H, X, F)`` for the archive (None unseeded)."""
        J, n = enc.n_positions, self.pop_size
        lo, hi = enc.x_bounds
        H = rng.integers(0, enc.n_heads + 1, size=(n, J))
        X = rng.uniform(lo, hi, size=(n, J))
        note, seeds = "", None
        if self.seed_with_dp:
            front = dp_front(problem, self.name)
            Hs, Xs = enc.encode(front.configs)
            seeds = (Hs, Xs, front.F)
            if len(Hs) > n:  # keep an even spread along the (cost-sorted) front
                pick = np.unique(np.linspace(0, len(Hs) - 1, n).round().astype(int))
                Hs, Xs = Hs[pick], Xs[pick]
            H[: len(Hs)], X[: len(Xs)] = Hs, Xs
            note = (
                f"; seeded with {len(Hs)} dp configurations (dp scored {front.n_evals} cuts apart)"
            )
        return np.concatenate([H.astype(float), X], axis=1), note, seeds
