"""Importers: bring prediction dumps made by other tools into a cache.

An importer is a function ``(out, **options) -> CacheReader`` registered under a short name
(``@register_importer("dyce")``); ``python -m data_cache.convert NAME ...`` runs it. Importing this
package registers the built-in importers.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from ..errors import CacheInputError

__all__ = ["register_importer", "list_importers", "get_importer"]

_IMPORTERS: dict[str, Callable] = {}


def register_importer(name: str) -> Callable[[Callable], Callable]:
    """Decorator: register an importer function under ``name`` (a name may be registered once)."""

    def deco(fn: Callable) -> Callable:
        if name in _IMPORTERS and _IMPORTERS[name] is not fn:
            raise ValueError(
                f"importer {name!r} is already registered (by {_IMPORTERS[name].__module__})"
            )
        _IMPORTERS[name] = fn
        return fn

    return deco


def list_importers(pattern: str = "") -> list[str]:
    """Sorted names of the registered importers, filtered by a shell-style ``pattern``."""
    return sorted(n for n in _IMPORTERS if not pattern or fnmatch.fnmatch(n, pattern))


def get_importer(name: str) -> Callable:
    """The importer registered as ``name``; an unknown name is refused listing the known ones."""
    if name not in _IMPORTERS:
        raise CacheInputError(f"importer: unknown importer {name!r}; known: {list_importers()}")
    return _IMPORTERS[name]


from . import dyce  # noqa: E402,F401  (import = registration)
