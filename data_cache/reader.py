"""Open a cache folder memory-mapped; nothing is loaded eagerly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import format as fmt
from ._base import CacheReader, meta_from_manifest
from .errors import CacheFormatError, CacheIncompleteError
from ._validation import validate_cache

__all__ = ["MemmapCache", "open_cache", "FULL_CHECK_BYTES"]

FULL_CHECK_BYTES = 512 << 20  # under this size, open_cache(validate="auto") also hashes and scans values


class MemmapCache(CacheReader):
    """A cache on disk, arrays opened with ``np.load(mmap_mode='r')``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_path = self.path / fmt.MANIFEST
        if not manifest_path.exists():
            if (self.path / fmt.PARTS_DIR).exists():
                raise CacheIncompleteError(f"{manifest_path}: missing: the cache is half-written; resume the dump")
            raise CacheFormatError(f"{manifest_path}: missing file (is {self.path} a cache folder?)")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (ValueError, OSError) as exc:
            raise CacheFormatError(f"{manifest_path}: not valid JSON ({exc})") from None
        self.meta = meta_from_manifest(self.manifest, source=str(manifest_path))
        self.fingerprint = self.manifest.get("fingerprint", "")
        self._open: dict[tuple[str, str], np.ndarray | None] = {}

    def _array(self, split: str, fname: str) -> np.ndarray | None:
        key = (split, fname)
        if key not in self._open:
            f = self.path / split / fname
            if fname in fmt.OPTIONAL_SPLIT_FILES and fname not in self.manifest["splits"][split].get("files", {}):
                self._open[key] = None
            else:
                self._open[key] = np.load(f, mmap_mode="r")
        return self._open[key]

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*.npy"))


def open_cache(path: str | Path | CacheReader, *, validate: str = "auto") -> CacheReader:
    """Open a cache folder (or pass a reader through).

    ``validate``: ``"full"`` checks files, shapes, dtypes, values and checksums; ``"fast"`` skips
    checksums and value scans; ``"auto"`` is full under ``FULL_CHECK_BYTES`` and fast above;
    ``"none"`` reads the manifest only. Problems raise :class:`CacheFormatError` listing each one.
    """
    if isinstance(path, CacheReader):
        return path
    if validate not in ("auto", "full", "fast", "none"):
        raise ValueError(f"validate must be one of 'auto', 'full', 'fast', 'none' (got {validate!r})")
    path = Path(path)
    cache = MemmapCache(path)
    if validate != "none":
        full = validate == "full" or (validate == "auto" and cache.nbytes() < FULL_CHECK_BYTES)
        problems = validate_cache(path, content=full, checksums=full)
        if problems:
            raise CacheFormatError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                                   problems)
    return cache
