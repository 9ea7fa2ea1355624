"""Open a cache folder memory-mapped; nothing is loaded eagerly."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TypeVar, overload

import numpy as np

from . import format as fmt
from ._base import CacheReader, meta_from_manifest, read_manifest
from ._validation import check_cache_files
from .errors import CacheFormatError

__all__ = ["MemmapCache", "open_cache"]

_Reader = TypeVar("_Reader", bound=CacheReader)

_OLD_LEVELS = {
    "auto": False,
    "full": False,
    "fast": True,
    "none": True,
}  # validate=... before issue 13


class MemmapCache(CacheReader):
    """A cache on disk, arrays opened with ``np.load(mmap_mode='r')``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.meta = meta_from_manifest(
            self.manifest, source=str(self.path / fmt.MANIFEST), with_files=True
        )
        self.fingerprint = self.manifest["fingerprint"]
        self._open: dict[tuple[str, str], np.ndarray | None] = {}

    def _files(self, split: str) -> dict:
        return self.manifest["splits"][split]["files"]

    def _array(self, split: str, fname: str) -> np.ndarray | None:
        key = (split, fname)
        if key not in self._open:
            present = fname in self._files(split)
            self._open[key] = np.load(self.path / split / fname, mmap_mode="r") if present else None
        return self._open[key]

    def nbytes(self) -> int:
        """Bytes of the cache's own files (what the manifest lists; nothing else in the folder counts)."""
        return sum(
            (self.path / s / f).stat().st_size for s in self.meta.splits for f in self._files(s)
        )


@overload
def open_cache(
    path: str | Path, *, skip_integrity_check: bool = ..., validate: str | None = ...
) -> MemmapCache: ...


@overload
def open_cache(
    path: _Reader, *, skip_integrity_check: bool = ..., validate: str | None = ...
) -> _Reader: ...


def open_cache(
    path: str | Path | CacheReader,
    *,
    skip_integrity_check: bool = False,
    validate: str | None = None,
) -> CacheReader:
    """Open a cache folder (or pass a reader through), checked the way ``data_cache.validate`` checks it.

    Always the manifest schema, every file's presence, shape and dtype, and the fingerprint; and unless
    ``skip_integrity_check=True``, every checksum and value in one streaming pass over the cache's own
    files, whatever its size (``docs/cache-format.md`` states the cost). Problems raise
    :class:`CacheFormatError` listing each one. ``validate`` is the old name of the choice
    (``"full"``/``"auto"`` check, ``"fast"``/``"none"`` skip) and warns.
    """
    if isinstance(path, CacheReader):
        return path
    if validate is not None:
        if validate not in _OLD_LEVELS:
            raise ValueError(
                f"validate must be one of {list(_OLD_LEVELS)} (got {validate!r}); "
                "use skip_integrity_check=True to skip the integrity pass"
            )
        warnings.warn(
            "open_cache(validate=...) is renamed: use skip_integrity_check=True to skip the integrity "
            "pass (the default checks everything)",
            DeprecationWarning,
            stacklevel=2,
        )
        skip_integrity_check = _OLD_LEVELS[validate]
    path = Path(path)
    cache = MemmapCache(path)  # reads the manifest and checks it against the schema, once
    problems = check_cache_files(
        path, cache.manifest, cache.meta, skip_integrity_check=skip_integrity_check
    )
    if problems:
        raise CacheFormatError(
            problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            problems,
        )
    return cache
