"""The on-disk layout of a prediction cache: the single source of truth.

``docs/cache-format.md`` mirrors this file. A cache is a folder::

    CACHE/
      manifest.json              written last; its presence marks a complete cache
      <split>/labels.npy         (n_samples,)            int64
      <split>/sample_index.npy   (n_samples,)            int64, dataset index of each row
      <split>/topk_ids.npy       (n_exits, k, n_samples) int32, class ids, rank 0 = most probable
      <split>/topk_probs.npy     (n_exits, k, n_samples) float32, softmax probabilities, descending
      <split>/logits.npy         (n_exits, n_samples, n_classes) float16, optional
      .parts/                    per-rank shards of an unfinished dump (removed when finalised)
      cost_tables/<name>.json    optional measured time tables (``data_cache/cost_tables.py``), one per target

Exit-major, rank-second, sample-last: the top-1 (and top-2) of one exit is one contiguous vector,
which is all a search over ``max_prob``/``margin`` reads from a memory-mapped cache.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "PARTS_DIR",
    "SPLIT_FILES",
    "OPTIONAL_SPLIT_FILES",
    "DTYPES",
    "MACS_CONVENTION",
    "UNIT_KINDS",
    "REQUIRED_SPLITS",
    "COST_TABLES_DIR",
    "RESERVED_NAMES",
]

FORMAT = "exitcache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTS_DIR = ".parts"
COST_TABLES_DIR = (
    "cost_tables"  # sidecar time tables, never listed in the manifest nor read by its checks
)
RESERVED_NAMES = (COST_TABLES_DIR,)  # folder names no split may take

LABELS = "labels.npy"
SAMPLE_INDEX = "sample_index.npy"
TOPK_IDS = "topk_ids.npy"
TOPK_PROBS = "topk_probs.npy"
LOGITS = "logits.npy"

SPLIT_FILES = (LABELS, SAMPLE_INDEX, TOPK_IDS, TOPK_PROBS)
OPTIONAL_SPLIT_FILES = (LOGITS,)

DTYPES: dict[str, np.dtype] = {
    LABELS: np.dtype(np.int64),
    SAMPLE_INDEX: np.dtype(np.int64),
    TOPK_IDS: np.dtype(np.int32),
    TOPK_PROBS: np.dtype(np.float32),
    LOGITS: np.dtype(np.float16),
}

MACS_CONVENTION = "MACs = FLOPs / 2"
UNIT_KINDS = ("segment", "head", "saver")
REQUIRED_SPLITS = ("search", "holdout")


def format_tag() -> str:
    """The value of the manifest's ``format`` field for this version."""
    return f"{FORMAT}/{FORMAT_VERSION}"


def expected_shape(fname: str, *, n_exits: int, k: int, n_samples: int, n_classes: int) -> tuple:
    """Shape a split file must have."""
    return {
        LABELS: (n_samples,),
        SAMPLE_INDEX: (n_samples,),
        TOPK_IDS: (n_exits, k, n_samples),
        TOPK_PROBS: (n_exits, k, n_samples),
        LOGITS: (n_exits, n_samples, n_classes),
    }[fname]
