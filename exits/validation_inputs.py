"""What a validation runs on: the cache a configuration was searched on, and the dataset rows of one of its
splits in the cache's row order (shared by ``exits.validate``, ``exits.validate_bundle`` and
``exits.export_bundle``)."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["open_searched_cache", "split_rows"]


def open_searched_cache(path: str | None, fingerprint: str | None, *, skip_integrity_check: bool = False) -> Any:
    """The cache at ``path``; without one, the bundled cache when its fingerprint is ``fingerprint`` (the one
    the configuration was searched on), else ``RuntimeConfigError``."""
    from data_cache import open_cache
    from data_cache.bundled import bundled_cache_path

    from .runtime import RuntimeConfigError

    if path is not None:
        return open_cache(path, skip_integrity_check=skip_integrity_check)
    bundled = bundled_cache_path()
    if bundled is not None:
        cache = open_cache(bundled, skip_integrity_check=skip_integrity_check)
        if cache.fingerprint == fingerprint:
            return cache
    raise RuntimeConfigError("the configuration was not searched on the bundled cache; pass the cache it was "
                             "searched on with --cache")


def split_rows(split: str, cache: Any, ckpt: dict, *, dataset: str | None = None, data_root: str | None = None) -> Any:
    """The dataset rows of ``split`` in the cache's row order (joined on ``sample_index``), rebuilt the way
    the dump made them (its recorded parameters, else the checkpoint's ``data``); ``DataError`` otherwise."""
    from torch.utils.data import Subset

    from .data import DataError, load_splits

    if split not in cache.splits():
        raise DataError(f"split {split!r} is not in the cache; it has {cache.splits()}")
    dumped = cache.meta.provenance.get("dataset") or {}
    params, trained = dumped.get("parameters") or {}, ckpt.get("data") or {}
    dataset = dataset or dumped.get("name") or trained.get("dataset")
    if dataset is None:
        raise DataError("the cache names no dataset; pass --dataset")
    if split not in ("search", "calibration", "holdout"):
        raise DataError(f"split {split!r}: only search, calibration and holdout can be rebuilt from the dataset")
    splits = load_splits(dataset, data_root, data_config=ckpt["data_config"],
                         search_fraction=params.get("search_fraction", trained.get("search_fraction", 0.1)),
                         seed=params.get("seed", trained.get("seed", 0)), max_samples=params.get("max_samples"),
                         calibration_size=params.get("calibration_size", 0))
    ds = getattr(splits, split)
    where = {int(s): i for i, s in enumerate(ds.indices)}
    want = np.asarray(cache.sample_index(split))
    missing = [int(s) for s in want if int(s) not in where]
    if missing:
        raise DataError(f"{dataset} {split}: {len(missing)} of the cache's samples (sample_index "
                        f"{missing[:3]}...) are not in this dataset split")
    return Subset(ds, [where[int(s)] for s in want])
