"""BlockReader: blocks of memory-mapped arrays read with plain reads equal what indexing gives."""
from __future__ import annotations

import numpy as np
import pytest

from data_cache.blocks import BlockReader


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """Arrays saved as .npy (headers of different lengths) and opened memory-mapped."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("blocks")
    arrays = {"probs": rng.random((7, 2, 5003), dtype=np.float32),
              "ids": rng.integers(0, 1000, (7, 2, 5003)).astype(np.int32),
              "labels": rng.integers(0, 1000, 5003),
              "logits": rng.normal(size=(3, 501, 17)).astype(np.float16)}
    out = {}
    for name, a in arrays.items():
        np.save(folder / f"{name}.npy", a)
        out[name] = (a, np.load(folder / f"{name}.npy", mmap_mode="r"))
    return out


def test_blocks_equal_indexing(mapped):
    rng = np.random.default_rng(1)
    with BlockReader() as reader:
        for _ in range(200):
            a, m = mapped[rng.choice(["probs", "ids"])]
            e, r = int(rng.integers(7)), int(rng.integers(2))
            start = int(rng.integers(0, 5003))
            stop = int(rng.integers(start, 5004))
            block = reader.read(m[e, r, start:stop])
            assert block.dtype == a.dtype and np.array_equal(block, a[e, r, start:stop])
        a, m = mapped["logits"]
        assert np.array_equal(reader.read(m[2, 100:300]), a[2, 100:300])
        a, m = mapped["labels"]
        out = np.empty(100, dtype=a.dtype)
        assert reader.read(m[4900:5000], out) is out and np.array_equal(out, a[4900:5000])


def test_other_arrays_are_copied(mapped):
    a, m = mapped["probs"]
    with BlockReader() as reader:
        assert np.array_equal(reader.read(a[3, 1, 10:20]), a[3, 1, 10:20])       # not memory-mapped
        assert np.array_equal(reader.read(m[3, :, 10:20]), a[3, :, 10:20])       # not contiguous
        with pytest.raises(ValueError, match="shape"):
            reader.read(m[0, 0, :10], np.empty(11, dtype=np.float32))
