"""Search exit configurations on a prediction cache. numpy only: never imports torch."""

from __future__ import annotations

from ._validation import SearchError, SearchWarning
from .budget import Budget
from .config import ExitConfig
from .engines import BaseEngine, create_engine, list_engines, register_engine
from .front import Front, non_dominated
from .problem import Evaluation, ExitProblem

__all__ = [
    "ExitProblem",
    "ExitConfig",
    "Evaluation",
    "Front",
    "Budget",
    "SearchError",
    "SearchWarning",
    "BaseEngine",
    "run_search",
    "create_engine",
    "list_engines",
    "register_engine",
    "non_dominated",
    "search",
    "SearchResult",
]


def __getattr__(name: str):
    """``search.search`` and ``search.SearchResult``, imported on first use (``search/api.py``,
    ``search/result.py``)."""
    if name == "search":
        from .api import search

        return search
    if name == "SearchResult":
        from .result import SearchResult

        return SearchResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_search(
    problem: ExitProblem,
    engine: str | BaseEngine,
    *,
    budget: Budget | None = None,
    seed=0,
    callback=None,
    max_exits: int | None = None,
) -> Front:
    """Run ``engine`` (a name or an engine object) on ``problem``; the caller's engine is not changed.
    ``max_exits``: enable at most that many exits per configuration (:meth:`BaseEngine.run`)."""
    if isinstance(engine, str):
        engine = create_engine(engine)
    return engine.run(problem, budget=budget, seed=seed, callback=callback, max_exits=max_exits)
