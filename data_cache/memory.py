"""An in-memory cache with the reader interface: for tests, synthetic data and imports."""

from __future__ import annotations

import numpy as np

from . import format as fmt
from ._base import CacheMeta, CacheReader, check_meta, meta_to_manifest
from .errors import CacheFormatError
from .fingerprint import array_digest, cache_fingerprint

__all__ = ["InMemoryCache"]


class InMemoryCache(CacheReader):
    """A cache held in numpy arrays.

    ``arrays[split][fname]`` uses the file names and shapes of :mod:`data_cache.format`; the arrays
    are copied and made read-only; ``meta`` is checked like a manifest and shapes are checked (values
    are not: see ``validate``).
    """

    def __init__(self, meta: CacheMeta, arrays: dict[str, dict[str, np.ndarray]]):
        check_meta(meta, "<memory>")
        self.meta = meta
        self._arrays: dict[str, dict[str, np.ndarray]] = {}
        problems = []
        for split, n in meta.splits.items():
            if split not in arrays:
                problems.append(f"<memory>: {split}: no arrays given for this split")
                continue
            self._arrays[split] = {}
            for fname in fmt.SPLIT_FILES:
                if fname not in arrays[split]:
                    problems.append(f"<memory>: {split}/{fname}: missing")
            for fname, arr in arrays[split].items():
                if fname not in fmt.DTYPES:
                    problems.append(
                        f"<memory>: {split}/{fname}: unknown file; known: {list(fmt.DTYPES)}"
                    )
                    continue
                a = np.array(
                    arr, dtype=fmt.DTYPES[fname]
                )  # a copy: later changes by the caller cannot leak in
                want = fmt.expected_shape(
                    fname, n_exits=meta.n_exits, k=meta.k, n_samples=n, n_classes=meta.n_classes
                )
                if a.shape != want:
                    problems.append(f"<memory>: {split}/{fname}: shape: {a.shape}, expected {want}")
                a.setflags(write=False)
                self._arrays[split][fname] = a
        if problems:
            raise CacheFormatError(problems[0], problems)
        self.fingerprint = cache_fingerprint(self.manifest())

    def _array(self, split: str, fname: str) -> np.ndarray | None:
        return self._arrays[split].get(fname)

    def manifest(self) -> dict:
        """The manifest this cache would be written with (file checksums included)."""
        m = meta_to_manifest(self.meta)
        for split, files in self._arrays.items():
            m["splits"][split]["files"] = {
                f: {"sha256": array_digest(a), "shape": list(a.shape), "dtype": a.dtype.str}
                for f, a in sorted(files.items())
            }
        return m
