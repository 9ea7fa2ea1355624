"""Shared fixtures for the search tests: small synthetic caches and a builder for hand-made ones."""
from __future__ import annotations

import numpy as np
import pytest

from data_cache import format as fmt
from data_cache._base import CacheMeta, ExitInfo, UnitInfo
from data_cache.memory import InMemoryCache
from data_cache.synthetic import make_synthetic_cache
from search import ExitProblem


def build_cache(exits: list[ExitInfo], units: list[UnitInfo], *, n_samples: int = 50, n_classes: int = 5,
                k: int = 3, seed: int = 0, logits: bool = False) -> InMemoryCache:
    """A cache with the given structure and random predictions, stored exactly as a dump would:
    float16 logits, their float32 softmax, its top-k (sorted descending) as probs and ids."""
    rng = np.random.default_rng(seed)
    splits = {"search": n_samples, "holdout": n_samples}
    meta = CacheMeta(exits=tuple(exits), units=tuple(units), n_classes=n_classes, k=k, splits=splits)
    arrays = {}
    for i, split in enumerate(splits):
        labels = rng.integers(0, n_classes, n_samples)
        z = rng.normal(0.0, 2.0, (len(exits), n_samples, n_classes))
        z[:, np.arange(n_samples), labels] += rng.uniform(0, 4, (len(exits), 1))  # some exits better
        z16 = z.astype(np.float16)
        p = softmax32(z16)
        order = np.argsort(-p, axis=-1, kind="stable")[..., :k]                  # (n_exits, n, k)
        arrays[split] = {
            fmt.LABELS: labels, fmt.SAMPLE_INDEX: np.arange(n_samples) + i * n_samples,
            fmt.TOPK_IDS: np.transpose(order, (0, 2, 1)),
            fmt.TOPK_PROBS: np.transpose(np.take_along_axis(p, order, axis=-1), (0, 2, 1)),
        }
        if logits:
            arrays[split][fmt.LOGITS] = z16
    return InMemoryCache(meta, arrays)


def softmax32(z) -> np.ndarray:
    """Softmax over the last axis in float32 (as the runtime computes it)."""
    z = np.asarray(z, dtype=np.float32)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def chain_structure(n_positions: int, head_macs: float = 1.0, seg_macs: float = 10.0):
    """Exits and units of a plain chain: one segment and one head per position, then the final head."""
    units = [UnitInfo(f"seg{p}", "segment", seg_macs * (p + 1)) for p in range(n_positions + 1)]
    units += [UnitInfo(f"head{p}", "head", head_macs) for p in range(n_positions)]
    exits = [ExitInfo(f"blocks.{p}/linear", p, "linear", tuple(f"seg{q}" for q in range(p + 1)) + (f"head{p}",))
             for p in range(n_positions)]
    exits.append(ExitInfo("head", n_positions, "final", tuple(f"seg{q}" for q in range(n_positions + 1)), final=True))
    return exits, units


@pytest.fixture(scope="session")
def small_cache():
    """3 positions x 2 head types, 1200 samples (600 per split)."""
    return make_synthetic_cache(1200, 3, n_head_types=2, seed=11)


@pytest.fixture(scope="session")
def small_problem(small_cache):
    return ExitProblem(small_cache)


@pytest.fixture(scope="session")
def saver_cache():
    """A TinySaver-style cache: an independent saver first, then 2 positions x 2 head types."""
    return make_synthetic_cache(800, 2, n_head_types=2, saver=True, seed=5)


@pytest.fixture(scope="session")
def make_cache():
    """:func:`build_cache`, for tests that need a hand-made structure."""
    return build_cache


@pytest.fixture(scope="session")
def chain():
    """:func:`chain_structure`."""
    return chain_structure
