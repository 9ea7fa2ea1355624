"""Exit scores from logits, in numpy, computed as ``exits.runtime.exit_scores`` and ``search.scores`` do.

Softmax of float32 logits; ``max_prob`` = top-1 probability, ``margin`` = top-1 minus top-2,
``neg_entropy`` = sum(p log p) over the softmax of the logits rounded to float16 (the cache stores
float16 logits). A score is compared as the spec reads, ``score > threshold`` in float64, done in float32
against :func:`float32_cut` of the threshold (the twin of ``exits.runtime.float32_cut``, kept here so
this package needs nothing but numpy).
"""
from __future__ import annotations

import numpy as np

__all__ = ["SCORE_KINDS", "exit_scores", "float32_cut", "score_range"]

SCORE_KINDS = ("max_prob", "margin", "neg_entropy")


def score_range(kind: str, n_classes: int) -> tuple[float, float]:
    """The closed interval every score of ``kind`` lies in."""
    return (-float(np.log(n_classes)), 0.0) if kind == "neg_entropy" else (0.0, 1.0)


def float32_cut(threshold: float) -> float:
    """The largest float32 <= ``threshold``: for a float32 score s, ``s > cut`` iff ``float64(s) > threshold``."""
    cut = float(np.float32(threshold))
    return float(np.nextafter(np.float32(cut), np.float32(-np.inf))) if cut > threshold else cut


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def exit_scores(logits: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Score ``(b,)`` float32 and top-1 prediction ``(b,)`` int64 (the most probable class) of logits
    ``(b, n_classes)``."""
    z = np.asarray(logits, dtype=np.float32)
    p = _softmax(z)
    pred = p.argmax(axis=1)
    if kind == "neg_entropy":
        zz = z.astype(np.float16).astype(np.float32)
        zz = zz - zz.max(axis=1, keepdims=True)
        logp = zz - np.log(np.exp(zz).sum(axis=1, keepdims=True))
        return (np.exp(logp) * logp).sum(axis=1, dtype=np.float32), pred
    top1 = np.take_along_axis(p, pred[:, None], axis=1)[:, 0]
    if kind == "max_prob":
        return top1, pred
    second = np.partition(p, p.shape[1] - 2, axis=1)[:, -2]
    return top1 - second, pred
