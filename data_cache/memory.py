"""An in-memory cache with the reader interface: for tests, synthetic data and imports."""
from __future__ import annotations

import numpy as np

from . import format as fmt
from ._base import CacheMeta, CacheReader, meta_to_manifest
from .errors import CacheFormatError
from .fingerprint import array_digest, cache_fingerprint

__all__ = ["InMemoryCache"]


class InMemoryCache(CacheReader):
    """A cache held in numpy arrays.

    ``arrays[split][fname]`` uses the file names and shapes of :mod:`data_cache.format`.
    """

    def __init__(self, meta: CacheMeta, arrays: dict[str, dict[str, np.ndarray]]):
        self.meta = meta
        self._arrays = {}
        for split in meta.splits:
            if split not in arrays:
                raise CacheFormatError(f"<memory>: {split}: no arrays given for this split")
            self._arrays[split] = {}
            for fname, arr in arrays[split].items():
                a = np.asarray(arr, dtype=fmt.DTYPES[fname])
                a.setflags(write=False)
                self._arrays[split][fname] = a
        self.fingerprint = cache_fingerprint(self.manifest())

    def _array(self, split: str, fname: str) -> np.ndarray | None:
        return self._arrays[split].get(fname)

    def manifest(self) -> dict:
        """The manifest this cache would be written with (file checksums included)."""
        m = meta_to_manifest(self.meta)
        for split, files in self._arrays.items():
            m["splits"][split]["files"] = {
                f: {"sha256": array_digest(a), "shape": list(a.shape), "dtype": a.dtype.str}
                for f, a in sorted(files.items())}
        return m
