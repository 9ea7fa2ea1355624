"""``BaseEngine``: options in ``__init__``, the problem in ``run``; every engine returns a Front."""

from __future__ import annotations

import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._validation import as_generator
from ..budget import Budget
from ..config import ExitConfig
from ..front import Front
from ._cap import cap_config, check_max_exits, n_exit_positions

__all__ = ["BaseEngine", "Candidates", "NO_EARLY_EXITS"]

NO_EARLY_EXITS = "no early exits: only the base model"


@dataclass
class Candidates:
    """What ``_run`` may return instead of a list: configs with their exact ``F`` (skips re-scoring)."""

    configs: list[ExitConfig]
    F: np.ndarray | None = None
    message: str = ""


class BaseEngine(ABC):
    """Subclasses store their keyword options as attributes of the same name and write ``_run``.

    ``_run(problem, budget, rng, callback)`` returns candidate ExitConfigs (any number, optionally
    with a message as ``(configs, message)``) or :class:`Candidates` carrying their exact ``F``;
    ``run`` evaluates what has no ``F`` (and everything, when the problem's cost is not additive: an engine's
    own per-unit sums are then a surrogate), keeps the non-dominated ones, records evaluations and time.
    ``callback(engine, problem)``, when given, is called by engines after each step (progress bars).
    A problem without early exits has one configuration, the base model: ``run`` returns it
    (:meth:`_base_only`) without calling ``_run``.
    """

    name: str = ""

    def get_params(self) -> dict:
        """The constructor's options as JSON-ready values (stored in exports)."""
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def run(
        self,
        problem,
        *,
        budget: Budget | None = None,
        seed=0,
        callback: Callable | None = None,
        max_exits: int | None = None,
    ) -> Front:
        """Search ``problem``; ``max_exits`` caps the exits a configuration enables: an engine with a
        ``max_exits`` option searches under the cap (a copy of this engine with it set), the others' results are
        repaired (:func:`~search.engines._cap.cap_config`) and re-scored."""
        if max_exits is not None:
            check_max_exits(max_exits, n_exit_positions(problem))
            params = self.get_params()
            if "max_exits" in params and params["max_exits"] != max_exits:
                return type(self)(**{**params, "max_exits": max_exits}).run(
                    problem, budget=budget, seed=seed, callback=callback
                )
        budget = (budget or Budget()).start(problem)
        rng = as_generator(seed)
        evals0, t0 = problem.n_evals, time.perf_counter()
        result = (
            self._base_only(problem)
            if problem.n_positions == 0
            else self._run(problem, budget, rng, callback)
        )
        if not isinstance(result, Candidates):
            configs, message = result if isinstance(result, tuple) else (result, "")
            result = Candidates(list(configs), None, message)
        configs, F = result.configs, result.F
        if max_exits is not None and "max_exits" not in self.get_params():
            configs, F = [cap_config(problem, c, max_exits) for c in configs], None
        if not problem.costs.additive:
            F = None  # scored on an additive surrogate (dp's per-unit sums): re-scored with the exact model
        if F is None:
            configs = list(dict.fromkeys(configs))  # drop duplicates, keep order
            F = problem.evaluate(configs) if configs else np.zeros((0, 2))
            problem.n_evals -= len(configs)  # re-scoring the result is bookkeeping, not search
        return Front(
            configs,
            F,
            self.name,
            self.get_params(),
            problem.n_evals - evals0,
            time.perf_counter() - t0,
            result.message,
        ).pareto()

    def _base_only(self, problem) -> Candidates:
        """The result on a problem without early exits: the base model, the only configuration."""
        return Candidates([problem.config((), ())], None, NO_EARLY_EXITS)

    @abstractmethod
    def _run(
        self, problem, budget: Budget, rng: np.random.Generator, callback: Callable | None
    ) -> list[ExitConfig] | tuple[list[ExitConfig], str]:
        """Search; return candidate configurations (and optionally a message)."""
