"""What a validation runs on: the cache a configuration was searched on, its table verified against that cache,
and the dataset rows of one of its splits in the cache's row order (shared by ``exits.validate``,
``exits.validate_bundle``, ``exits.export_bundle`` and ``exits.runtime``)."""
from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["open_searched_cache", "split_rows", "verify_table", "warning_lines", "CALIBRATION_WARNING"]

CALIBRATION_WARNING = ("--split calibration: the certificates were computed on these very rows, so the measured "
                       "drop next to them is not an independent check; holdout is")


def verify_table(doc: Mapping[str, Any], cache: Any, *, source: str, warn: bool = True) -> Any:
    """``search.verify.verify_export`` of ``doc`` on ``cache``: the ``Verification``; without a cache (None) only
    the schema is checked (``search.export_schema``) and None returned. A field of the wrong type, or a number or
    certificate that does not reproduce, is a ``RuntimeConfigError`` in one line. Its warning lines (and, without a
    cache, that the numbers are unverified) are issued as ``search.SearchWarning`` when ``warn``."""
    from search import SearchError, SearchWarning
    from search.export_schema import export_problems
    from search.verify import UNVERIFIED, verify_export

    from .runtime import RuntimeConfigError

    if cache is None:
        problems = export_problems(dict(doc))
        if problems:
            raise RuntimeConfigError(f"{source}: {problems[0]}")
        if warn:
            warnings.warn(SearchWarning(UNVERIFIED), stacklevel=3)
        return None
    try:
        verification = verify_export(dict(doc), cache, source=source)
    except SearchError as exc:
        raise RuntimeConfigError(str(exc)) from None
    for line in verification.warnings if warn else ():
        warnings.warn(SearchWarning(line), stacklevel=3)
    return verification


@contextlib.contextmanager
def warning_lines() -> Iterator[None]:
    """``search.SearchWarning`` raised meanwhile (a verification's) printed as one ``warning: ...`` line each."""
    from search import SearchWarning

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", SearchWarning)
        warnings.showwarning = show
        yield


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
