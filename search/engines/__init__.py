"""Engine registry: ``@register_engine`` fills it; ``create_engine(name, **opts)`` builds one."""

from __future__ import annotations

import fnmatch
import importlib

from .._validation import SearchError
from ._base import BaseEngine, Candidates

__all__ = [
    "BaseEngine",
    "Candidates",
    "register_engine",
    "create_engine",
    "list_engines",
    "engine_class",
]

_ENGINES: dict[str, type[BaseEngine]] = {}
_MODULES = ("dp", "exhaustive", "baselines", "pymoo_nsga2", "optuna_engine")


def register_engine(cls: type[BaseEngine]) -> type[BaseEngine]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no engine name")
    _ENGINES[cls.name] = cls
    return cls


def _load_all() -> None:
    """Import every engine module, which registers its engines (optional packages load only in ``run``)."""
    for m in _MODULES:
        importlib.import_module(f"{__name__}.{m}")


def list_engines(pattern: str = "") -> list[str]:
    """Registered engine names, sorted, filtered by a wildcard pattern."""
    _load_all()
    names = sorted(_ENGINES)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def engine_class(name: str) -> type[BaseEngine]:
    """The engine class registered as ``name``, else SearchError listing the registered names."""
    _load_all()
    if name not in _ENGINES:
        raise SearchError(f"unknown method {name!r}; available: {', '.join(sorted(_ENGINES))}")
    return _ENGINES[name]


def create_engine(name: str, **options) -> BaseEngine:
    """Build engine ``name``; options equal to None are dropped so defaults live in one signature."""
    cls = engine_class(name)
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return cls(**options)
    except TypeError as exc:
        raise SearchError(f"method {name!r}: {exc}") from None
