"""data_cache.reader: memory-mapped, read-only arrays; validation levels of open_cache."""
from __future__ import annotations

import numpy as np
import pytest

from data_cache import (
    CacheFormatError,
    CacheIncompleteError,
    MemmapCache,
    create_cache,
    open_cache,
    save_cache,
)
from data_cache import format as fmt

from ._helpers import edit_manifest, rewrite, small_cache


@pytest.fixture
def cache_dir(tmp_path):
    save_cache(tmp_path / "c", small_cache())
    return tmp_path / "c"


def test_arrays_are_read_only_memmaps(cache_dir):
    cache = open_cache(cache_dir)
    assert isinstance(cache, MemmapCache)
    for get in ("labels", "sample_index", "topk_ids", "topk_probs"):
        a = getattr(cache, get)("search")
        assert isinstance(a, np.memmap) and not a.flags.writeable
        with pytest.raises(ValueError):
            a[0] = 0
    assert cache.topk_probs("search").shape == (cache.meta.n_exits, cache.k, cache.n_samples("search"))
    assert cache.logits("search") is None and not cache.has_logits("search")


def test_reader_interface(cache_dir):
    cache = open_cache(cache_dir)
    assert cache.splits() == ["search", "holdout"]
    assert cache.exit_index(cache.exits[-1].name) == cache.meta.n_exits - 1
    assert cache.exits[-1].final
    with pytest.raises(KeyError, match="split 'train' is not in this cache"):
        cache.labels("train")
    with pytest.raises(KeyError, match="exit 'nope' is not in this cache"):
        cache.exit_index("nope")
    assert open_cache(cache) is cache
    assert "MemmapCache(exits=8" in repr(cache)


def test_integrity_check_on_by_default_and_skipped_by_name(cache_dir):
    probs = np.array(np.load(cache_dir / "search" / fmt.TOPK_PROBS))
    probs[1, 0, 3] = np.nan
    rewrite(cache_dir, "search", fmt.TOPK_PROBS, probs)  # checksums still agree: a content problem only
    with pytest.raises(CacheFormatError, match="NaN or inf"):
        open_cache(cache_dir)
    assert np.isnan(open_cache(cache_dir, skip_integrity_check=True).topk_probs("search")[1, 0, 3])
    rewrite(cache_dir, "search", fmt.TOPK_PROBS, probs[:, :, :10])
    with pytest.raises(CacheFormatError, match=r"topk_probs.npy: shape"):
        open_cache(cache_dir, skip_integrity_check=True)  # headers are always checked


def test_old_validate_levels_still_work_and_warn(cache_dir):
    probs = np.array(np.load(cache_dir / "search" / fmt.TOPK_PROBS))
    probs[1, 0, 3] = np.nan
    rewrite(cache_dir, "search", fmt.TOPK_PROBS, probs)
    for level, skips in (("auto", False), ("full", False), ("fast", True), ("none", True)):
        with pytest.warns(DeprecationWarning, match="skip_integrity_check"):
            if skips:
                open_cache(cache_dir, validate=level)
            else:
                with pytest.raises(CacheFormatError, match="NaN or inf"):
                    open_cache(cache_dir, validate=level)


def test_nbytes_counts_only_the_caches_own_files(cache_dir):
    own = open_cache(cache_dir).nbytes()
    with open(cache_dir / "junk.npy", "wb") as f:
        f.truncate(1 << 30)
    (cache_dir / "search" / "extra.npy").write_bytes(b"x" * 1000)
    assert open_cache(cache_dir).nbytes() == own


def test_error_lists_every_problem(cache_dir):
    labels = np.array(np.load(cache_dir / "holdout" / fmt.LABELS))
    labels[0] = 99
    rewrite(cache_dir, "holdout", fmt.LABELS, labels)
    (cache_dir / "search" / fmt.TOPK_IDS).unlink()
    with pytest.raises(CacheFormatError, match=r"\(and 1 more\)") as info:
        open_cache(cache_dir)
    assert len(info.value.problems) == 2


def test_unknown_validate_level(cache_dir):
    with pytest.raises(ValueError, match="validate must be one of"):
        open_cache(cache_dir, validate="some")


def test_not_a_cache_and_half_written(tmp_path):
    with pytest.raises(CacheFormatError, match="is .* a cache folder"):
        open_cache(tmp_path)
    create_cache(tmp_path / "half", small_cache().meta)
    with pytest.raises(CacheIncompleteError, match="half-written; resume the dump"):
        open_cache(tmp_path / "half")


def test_broken_manifest(cache_dir):
    (cache_dir / fmt.MANIFEST).write_text("{not json")
    with pytest.raises(CacheFormatError, match="manifest.json: not valid JSON"):
        open_cache(cache_dir)
    (cache_dir / fmt.MANIFEST).write_text("[1, 2]")
    with pytest.raises(CacheFormatError, match="a JSON object expected"):
        open_cache(cache_dir)


def test_unknown_format_version(cache_dir):
    edit_manifest(cache_dir, lambda m: m.update(format="exitcache/99"))
    with pytest.raises(CacheFormatError, match="format: unknown format version 'exitcache/99'"):
        open_cache(cache_dir, skip_integrity_check=True)
