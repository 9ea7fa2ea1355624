"""The optuna engine's study plumbing: optuna kept quiet, the search space of a :class:`MixedEncoding`
(``Space``: trial params <-> (H, X)), samplers by name, and the ask-evaluate-tell loop (``optimize``)."""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np

from data_cache.interrupts import interrupts_deferred

from .._validation import SearchError
from ..budget import Budget
from ..encoding import MixedEncoding, constraint_values
from ..storage import RUN_ATTR
from ._population import import_optional

__all__ = ["SAMPLERS", "Space", "make_sampler", "optimize", "quiet"]

SAMPLERS = ("nsga2", "tpe", "random")


@contextlib.contextmanager
def quiet(optuna):
    """No per-trial INFO lines and no ExperimentalWarnings while the engine runs."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


class Space:
    """Optuna parameter names and distributions of a :class:`MixedEncoding`; trial params <-> (H, X)."""

    def __init__(self, enc: MixedEncoding):
        self.enc = enc
        lo, hi = enc.x_bounds
        prefix = "thr" if enc.kind == "float" else "q"
        self.head_names = [f"head_{p}" for p in enc.problem.positions]
        self.x_names = [f"{prefix}_{p}" for p in enc.problem.positions]
        self.choices = [enc.choice_names(j) for j in range(enc.n_positions)]
        self.bounds = list(zip(lo.tolist(), hi.tolist(), strict=True))

    def suggest(self, trial) -> tuple[np.ndarray, np.ndarray]:
        J = self.enc.n_positions
        h, x = np.zeros(J, dtype=np.int64), np.zeros(J)
        for j in range(J):
            h[j] = self.choices[j].index(
                trial.suggest_categorical(self.head_names[j], self.choices[j])
            )
            x[j] = trial.suggest_float(self.x_names[j], *self.bounds[j])
        return h, x

    def from_params(self, params_list) -> tuple[np.ndarray, np.ndarray]:
        H = np.array(
            [
                [self.choices[j].index(p[self.head_names[j]]) for j in range(self.enc.n_positions)]
                for p in params_list
            ],
            dtype=np.int64,
        ).reshape(-1, self.enc.n_positions)
        X = np.array([[p[n] for n in self.x_names] for p in params_list], dtype=float).reshape(
            H.shape
        )
        return H, X

    def to_params(self, H: np.ndarray, X: np.ndarray) -> list[dict]:
        return [
            {
                **{n: self.choices[j][int(h[j])] for j, n in enumerate(self.head_names)},
                **{n: float(np.clip(x[j], *self.bounds[j])) for j, n in enumerate(self.x_names)},
            }
            for h, x in zip(H, X, strict=True)
        ]


def make_sampler(optuna, sampler, seed: int, pop_size: int):
    """The sampler named (or given as an optuna ``BaseSampler``), seeded."""
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return sampler
    if sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=pop_size)
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SearchError(
        f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)} or pass an optuna BaseSampler"
    )


def optimize(
    study,
    space: Space,
    problem,
    budget: Budget,
    *,
    n_trials: int | None,
    batch_size: int,
    max_drop,
    max_cost,
    on_batch=None,
    run: dict | None = None,
) -> list[int]:
    """Ask, evaluate and tell trials in batches until the budget or ``n_trials``; the told trial numbers.
    ``run``: the record each asked trial is tagged with (a shared storage), so a rerun can tell if it died."""
    optuna = import_optional("optuna", "optuna", "optuna")
    base_error = problem.base.error
    told: list[int] = []
    while (n_trials is None or len(told) < n_trials) and not budget.exhausted(problem):
        k = int(
            min(
                batch_size,
                budget.evals_left(problem),
                math.inf if n_trials is None else n_trials - len(told),
            )
        )
        trials, n_told = [], 0
        try:
            # storage calls run whole (a signal acts between them): a trial is asked and recorded, or told
            # and counted, never half of either; the numpy work between them stays interruptible
            with interrupts_deferred():
                for _ in range(k):
                    trials.append(study.ask())
                    if run is not None:
                        trials[-1].set_user_attr(RUN_ATTR, run)
                rows = [space.suggest(t) for t in trials]
            H, X = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
            F = space.enc.evaluate(H, X)
            G = constraint_values(F, base_error, max_drop=max_drop, max_cost=max_cost)
            names = [
                n for n, v in (("max_drop", max_drop), ("max_cost", max_cost)) if v is not None
            ]
            with interrupts_deferred():
                for i, t in enumerate(trials):
                    for name, g in zip(names, G[i], strict=True):
                        t.set_constraint(name, float(g))
                    study.tell(t, F[i].tolist())
                    told.append(t.number)
                    n_told = i + 1
        finally:  # interrupted: asked trials that were not told are marked failed, never left running
            with interrupts_deferred():
                for t in trials[n_told:]:
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
        if on_batch is not None:
            on_batch()
    return told
