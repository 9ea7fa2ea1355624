"""A split of a cache read chunk by chunk: every exit's scores and correctness for a range of samples.

Memory-mapped caches are read with :class:`data_cache.blocks.BlockReader`, so memory stays bounded by
one chunk (``n_exits x chunk_size`` scores and flags) whatever the size of the split.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from data_cache import format as fmt
from data_cache.blocks import BlockReader
from data_cache.integrity import check_read_range

from .scores import compute_scores

__all__ = [
    "RuleParams",
    "DEFAULT_CHUNK_SIZE",
    "read_block",
    "iter_blocks",
    "load_split",
    "load_scores",
]

DEFAULT_CHUNK_SIZE = 1 << 16

RuleParams = Mapping[int, Mapping[str, Any]]
"""A learned rule's params per exit (by cache exit index), as a configuration carries them."""


def read_block(
    cache,
    split: str,
    score: str,
    start: int,
    stop: int,
    reader: BlockReader,
    params: RuleParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(n_exits, stop - start)`` float32 and whether each exit's top-1 is right (same shape, bool);
    ``params``: a learned rule's, per exit (:func:`~search.scores.compute_scores`)."""
    scores = compute_scores(
        cache, split, score, start=start, stop=stop, reader=reader, params=params
    )
    labels = reader.read(cache.labels(split)[start:stop])
    top = (
        cache.n_classes - 1
    )  # what is read is range-checked: the integrity pass may have been skipped
    check_read_range(cache, split, fmt.LABELS, "labels", None, labels, 0, top)
    ids = cache.topk_ids(split)
    correct = np.empty(scores.shape, dtype=bool)
    top1 = np.empty(stop - start, dtype=ids.dtype)
    for e in range(scores.shape[0]):
        check_read_range(
            cache,
            split,
            fmt.TOPK_IDS,
            "class ids",
            e,
            reader.read(ids[e, 0, start:stop], top1),
            0,
            top,
        )
        np.equal(top1, labels, out=correct[e])
    return scores, correct


def iter_blocks(
    cache,
    split: str,
    score: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    params: RuleParams | None = None,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(start, stop, scores, correct)`` for consecutive chunks of ``chunk_size`` samples."""
    n = cache.n_samples(split)
    with BlockReader() as reader:
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            yield (start, stop, *read_block(cache, split, score, start, stop, reader, params))


def load_split(
    cache,
    split: str,
    score: str,
    *,
    samples: np.ndarray | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    params: RuleParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(n_exits, n)`` and correctness of the ``samples`` (sorted indices; all when None),
    read chunk by chunk."""
    n = cache.n_samples(split) if samples is None else samples.size
    n_exits = len(cache.exits)
    scores, correct = np.empty((n_exits, n), dtype=np.float32), np.empty((n_exits, n), dtype=bool)
    if samples is None:
        for start, stop, s, c in iter_blocks(
            cache, split, score, chunk_size=chunk_size, params=params
        ):
            scores[:, start:stop], correct[:, start:stop] = s, c
        return scores, correct
    bounds = np.searchsorted(samples, np.arange(0, cache.n_samples(split) + chunk_size, chunk_size))
    for i, (start, _stop, s, c) in enumerate(
        iter_blocks(cache, split, score, chunk_size=chunk_size, params=params)
    ):
        lo, hi = bounds[i], bounds[i + 1]
        if hi > lo:
            picked = samples[lo:hi] - start
            scores[:, lo:hi], correct[:, lo:hi] = s[:, picked], c[:, picked]
    return scores, correct


def load_scores(
    cache,
    split: str,
    score: str,
    *,
    samples: np.ndarray | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    params: RuleParams | None = None,
) -> np.ndarray:
    """Scores ``(n_exits, n)`` float32 of rule ``score`` for the ``samples`` (sorted indices; all when None),
    read chunk by chunk (another rule's scores beside those :func:`load_split` read)."""
    total = cache.n_samples(split)
    n = total if samples is None else samples.size
    out = np.empty((len(cache.exits), n), dtype=np.float32)
    with BlockReader() as reader:
        for start in range(0, total, chunk_size):
            stop = min(total, start + chunk_size)
            if samples is None:
                out[:, start:stop] = compute_scores(
                    cache, split, score, start=start, stop=stop, reader=reader, params=params
                )
                continue
            lo, hi = np.searchsorted(samples, [start, stop])
            if hi > lo:
                s = compute_scores(
                    cache, split, score, start=start, stop=stop, reader=reader, params=params
                )
                out[:, lo:hi] = s[:, samples[lo:hi] - start]
    return out
