"""A cache folder given on a command line, checked before any work as :class:`CacheWriter` will decide
later (re-exported by ``writer.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import format as fmt
from .errors import CacheExistsError, CacheIncompleteError, CacheInputError
from .outputs import OutputError, check_output_place
from .ownership import PARTS_META, OwnershipError, check_not_input, owned_by_cache

__all__ = ["check_cache_target"]


def _read_json(path: Path) -> dict | None:
    """A JSON object from ``path``, or None when it is missing or unreadable."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return d if isinstance(d, dict) else None


def _cannot_resume(path: Path) -> str:
    return (
        f"{path}: holds a half-written cache that cannot be resumed ({fmt.PARTS_DIR}/{PARTS_META} is missing "
        "or unreadable); start again (--overwrite)"
    )


def check_cache_target(
    path: str | Path, *, overwrite: bool, resume: bool = False, option: str = "--out", inputs=()
) -> Path:
    """A command line's cache folder checked before any work, as :class:`CacheWriter` will decide later:
    the place must be a folder (or a new name in an existing, writable folder) that is not, does not hold and
    does not lie inside an input (``inputs``: ``(option, path)``); a complete cache there needs ``overwrite``
    (and a manifest of this format, ``ownership.owned_by_cache``), a half-written one ``resume`` or
    ``overwrite``; a non-empty folder holding no cache is refused. Raises the same errors the writer would,
    one line naming ``option`` and the path."""
    try:
        p = check_output_place(path, option=option, what="folder")
        check_not_input(p, inputs, folder=True)
    except (OutputError, OwnershipError) as exc:
        raise CacheInputError(
            str(exc) if isinstance(exc, OutputError) else f"{option} {path}: {exc}"
        ) from None
    if resume and overwrite:
        raise CacheInputError(
            f"{option} {p}: --resume continues the cache there and --overwrite replaces it; "
            "pass one of them"
        )
    if p.is_symlink() or (p.exists() and not p.is_dir()):
        raise CacheInputError(f"{option} {p}: exists and is not a folder")
    if not os.access(p.parent, os.W_OK | os.X_OK) or (
        p.is_dir() and not os.access(p, os.W_OK | os.X_OK)
    ):
        raise CacheInputError(f"{option} {p}: not writable")
    if (p / fmt.MANIFEST).exists() or (p / fmt.MANIFEST).is_symlink():
        if not overwrite:
            raise CacheExistsError(
                f"{p}: already holds a complete cache; "
                + ("nothing to resume; " if resume else "")
                + "pass --overwrite to replace it"
            )
        owned_by_cache(p)  # --overwrite: only a cache's own manifest lets it be replaced
    elif (p / fmt.PARTS_DIR).is_dir():
        if not (resume or overwrite):
            raise CacheIncompleteError(
                f"{p}: holds a half-written cache; resume it (--resume) or start again "
                "(--overwrite)"
            )
        if resume and _read_json(p / fmt.PARTS_DIR / PARTS_META) is None:
            raise CacheIncompleteError(_cannot_resume(p))
    elif p.is_dir() and any(p.iterdir()):
        raise CacheExistsError(
            f"{p}: folder is not empty and holds files but no cache written by this tool; "
            "nothing in it is touched; choose an empty or new folder"
        )
    return p
