"""Independence by content: which rows of one split repeat rows of another, whatever ``sample_index`` or the
provenance say.

A row is identified by a 64-bit hash of everything the cache holds for it: its label and, at every exit, the
top-k class ids and probabilities (bit for bit). Two rows hash alike when the model saw the same image (or
one indistinguishable to every exit), so a calibration split that holds the search split's rows shuffled,
renumbered or labelled as another dataset part is found all the same. Hashing is vectorised over rows and
streamed chunk by chunk (one column of the cache at a time), so a split of millions of rows costs seconds
and memory stays at a chunk; hashes are kept per cache object, so a split is hashed once per process.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from data_cache.blocks import BlockReader

from .chunks import DEFAULT_CHUNK_SIZE

__all__ = ["row_hashes", "repeated_rows", "Overlap", "split_overlap"]

_GOLDEN = 0x9E3779B97F4A7C15
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_known: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # cache -> {split: hashes}


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, in place on ``x`` uint64 (wrapping arithmetic)."""
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def _fold(h: np.ndarray, column: np.ndarray, salt: int) -> None:
    """``h`` (uint64, in place) combined with one column of 32- or 64-bit values."""
    v = column.view(np.uint32 if column.dtype.itemsize == 4 else np.uint64).astype(np.uint64)
    v += np.uint64((salt * _GOLDEN) % (1 << 64))
    h ^= _mix(v)
    _mix(h)


def _hash_chunk(cache, split: str, start: int, stop: int, reader: BlockReader) -> np.ndarray:
    labels = reader.read(cache.labels(split)[start:stop])
    h = np.zeros(stop - start, dtype=np.uint64)
    _fold(h, labels.astype(np.int64), 1)
    salt = 2
    for arr in (cache.topk_ids(split), cache.topk_probs(split)):
        buf = np.empty(stop - start, dtype=arr.dtype)
        for e in range(arr.shape[0]):
            for j in range(arr.shape[1]):
                _fold(h, reader.read(arr[e, j, start:stop], buf), salt)
                salt += 1
    return h


def row_hashes(cache, split: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """One uint64 per row of ``split`` ``(n_samples,)``: a hash of its label and every exit's top-k ids and
    probabilities (computed once per cache object and split)."""
    try:
        known = _known.setdefault(cache, {})
    except TypeError:  # a cache object that cannot be weakly referenced: not kept
        known = {}
    if split not in known:
        n = cache.n_samples(split)
        out = np.empty(n, dtype=np.uint64)
        with BlockReader() as reader:
            for start in range(0, n, chunk_size):
                stop = min(n, start + chunk_size)
                out[start:stop] = _hash_chunk(cache, split, start, stop, reader)
        known[split] = out
    return known[split]


def repeated_rows(hashes: np.ndarray, others: np.ndarray) -> int:
    """How many entries of ``hashes`` occur among ``others`` (both uint64 row hashes)."""
    if hashes.size == 0 or others.size == 0:
        return 0
    return int(np.count_nonzero(np.isin(hashes, others)))


@dataclass(frozen=True)
class Overlap:
    """Rows of ``split`` (``n`` of them) whose content repeats a row of ``other`` (``repeated``)."""

    split: str
    other: str
    n: int
    repeated: int

    @property
    def fraction(self) -> float:
        return self.repeated / self.n if self.n else 0.0

    def describe(self) -> str:
        return (
            f"{self.repeated} of the {self.n} {self.split} rows repeat rows of {self.other} by content "
            "(the same label and the same top-k ids and probabilities at every exit)"
        )


def split_overlap(
    cache,
    split: str,
    other: str,
    *,
    rows: np.ndarray | None = None,
    other_rows: np.ndarray | None = None,
) -> Overlap:
    """Rows of ``split`` (only ``rows``, when given) repeating rows of ``other`` (only ``other_rows``)."""
    a, b = row_hashes(cache, split), row_hashes(cache, other)
    a = a if rows is None else a[rows]
    b = b if other_rows is None else b[other_rows]
    return Overlap(split, other, int(a.size), repeated_rows(a, b))
