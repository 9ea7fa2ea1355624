"""Score kinds: how confident an exit is in a sample. The reference the runtime is tested against.

Every kind is computed in float32 from what the cache stores, exactly as the runtime computes it
from a softmax vector: ``max_prob = p[0]``, ``margin = p[0] - p[1]`` (top-k probabilities sorted
descending), ``neg_entropy = sum(p * log p)`` over the full softmax of the stored float16 logits.
"""
from __future__ import annotations

import numpy as np

from data_cache import format as fmt
from data_cache.blocks import BlockReader
from data_cache.integrity import PROB_MAX, check_read_range

from ._validation import SearchError

__all__ = ["SCORE_KINDS", "score_range", "compute_scores", "scores_from_probs", "float32_cut"]

SCORE_KINDS = ("max_prob", "margin", "neg_entropy")


def score_range(kind: str, n_classes: int) -> tuple[float, float]:
    """The closed interval every score of ``kind`` lies in (thresholds are checked against it)."""
    check_kind(kind)
    if kind == "neg_entropy":
        return (-float(np.log(n_classes)), 0.0)
    return (0.0, 1.0)


def float32_cut(threshold: float) -> np.float32:
    """The largest float32 <= ``threshold``: for a float32 score s, ``s > cut`` iff ``float64(s) > threshold``.

    Comparing float32 scores with this cut gives the semantics of the spec (float64 comparison) at
    float32 speed; ``exits.runtime.float32_cut`` is the same rule on the torch side.
    """
    cut = np.float32(threshold)
    return np.nextafter(cut, np.float32(-np.inf)) if float(cut) > threshold else cut


def check_kind(kind: str) -> str:
    if kind not in SCORE_KINDS:
        raise SearchError(f"unknown score kind {kind!r}; choose one of {list(SCORE_KINDS)}")
    return kind


def _neg_entropy(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float32)
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return (np.exp(logp) * logp).sum(axis=-1).astype(np.float32)


def _check_finite(row: np.ndarray, cache, split: str, kind: str, exit_index: int) -> None:
    """A NaN or inf score names the cache file and the exit, never a threshold the user did not give.

    The row was just computed, so the check is nearly free.
    """
    if np.isfinite(row).all():
        return
    fname = "logits.npy" if kind == "neg_entropy" else "topk_probs.npy"
    field = "logits" if kind == "neg_entropy" else "probabilities"
    where = f"{getattr(cache, 'path', '<memory>')}/{split}/{fname}"
    raise SearchError(f"{where}: {field}: NaN or inf values at exit {cache.exits[exit_index].name} give "
                      f"non-finite {kind} scores; check the cache with python -m data_cache.validate")


def compute_scores(cache, split: str, kind: str = "max_prob", *, exits=None, start: int = 0,
                   stop: int | None = None, reader: BlockReader | None = None) -> np.ndarray:
    """Scores ``(n_exits, stop - start)`` float32 of the chosen exits (all by default) for the
    samples ``start:stop`` of ``split`` (all by default).

    Memory-mapped caches are read block by block with ``reader`` (see :mod:`data_cache.blocks`), so
    the pages read never pile up in the process. A NaN or inf score is refused, naming the file.
    """
    check_kind(kind)
    exits = range(len(cache.exits)) if exits is None else list(exits)
    stop = cache.n_samples(split) if stop is None else stop
    if reader is None:
        with BlockReader() as own:
            return compute_scores(cache, split, kind, exits=exits, start=start, stop=stop, reader=own)
    out = np.empty((len(exits), stop - start), dtype=np.float32)
    if kind == "neg_entropy":
        logits = cache.logits(split)
        if logits is None:
            raise SearchError(f"score 'neg_entropy' needs logits, and split {split!r} of this cache has none; "
                              "dump with --logits or use max_prob/margin")
        for j, e in enumerate(exits):
            out[j] = _neg_entropy(reader.read(logits[e, start:stop]))
            _check_finite(out[j], cache, split, kind, e)
        return out
    if kind == "margin" and cache.k < 2:
        raise SearchError("score 'margin' needs the top-2 probabilities; this cache stores k=1")
    probs = cache.topk_probs(split)
    second = np.empty(stop - start, dtype=np.float32) if kind == "margin" else None
    for j, e in enumerate(exits):   # each probability read is range-checked (the integrity pass may be skipped)
        check_read_range(cache, split, fmt.TOPK_PROBS, "probabilities", e, reader.read(probs[e, 0, start:stop], out[j]),
                         0.0, PROB_MAX)
        if second is not None:
            check_read_range(cache, split, fmt.TOPK_PROBS, "probabilities", e,
                             reader.read(probs[e, 1, start:stop], second), 0.0, PROB_MAX)
            out[j] -= second
        _check_finite(out[j], cache, split, kind, e)
    return out


def scores_from_probs(kind: str, probs: np.ndarray) -> np.ndarray:
    """Scores from full softmax probabilities ``(n_samples, n_classes)`` float32 (max_prob, margin)."""
    check_kind(kind)
    p = np.asarray(probs, dtype=np.float32)
    if kind == "max_prob":
        return p.max(axis=-1)
    if kind == "margin":
        top2 = -np.sort(-p, axis=-1)[..., :2]
        return (top2[..., 0] - top2[..., 1]).astype(np.float32)
    return (p * np.log(np.clip(p, np.finfo(np.float32).tiny, None))).sum(axis=-1).astype(np.float32)
