"""data_cache.fingerprint: stable hashes of arrays, files and caches; what a cache fingerprint covers."""
from __future__ import annotations

import copy
import hashlib

import numpy as np

from data_cache.fingerprint import array_digest, cache_fingerprint, digest_arrays, file_digest

from ._helpers import small_cache


def test_array_digest_covers_dtype_shape_and_bytes(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(4, 6)
    assert array_digest(a) == array_digest(a.copy())
    assert array_digest(a) != array_digest(a.astype(np.int64))
    assert array_digest(a) != array_digest(a.reshape(6, 4))
    b = a.copy()
    b[0, 0] = 1
    assert array_digest(a) != array_digest(b)
    assert array_digest(a.T) == array_digest(np.ascontiguousarray(a.T))  # C-order content, not memory layout
    np.save(tmp_path / "a.npy", a)
    assert array_digest(np.load(tmp_path / "a.npy", mmap_mode="r")) == array_digest(a)


def test_file_digest(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert file_digest(tmp_path / "f") == "sha256:" + hashlib.sha256(b"abc").hexdigest()


def test_digest_arrays_is_order_independent():
    x, y = np.zeros(3), np.ones(2)
    assert digest_arrays({"x": x, "y": y}) == digest_arrays({"y": y, "x": x})
    assert digest_arrays({"x": x, "y": y}) != digest_arrays({"x": y, "y": x})


def test_cache_fingerprint_what_is_in_and_out():
    m = small_cache().manifest()
    fp = cache_fingerprint(m)

    def changed(fn) -> bool:
        m2 = copy.deepcopy(m)
        fn(m2)
        return cache_fingerprint(m2) != fp

    # out: provenance, creation details, split definitions, cost notes, latencies, int vs float MACs
    assert not changed(lambda d: d.update(provenance={"created": "now", "command": "x"}))
    assert not changed(lambda d: d["splits"]["search"].update(definition="other words"))
    assert not changed(lambda d: d.update(costs={"latency_device": "gpu"}))
    assert not changed(lambda d: d["units"][0].update(latency_s=1.0))
    m["units"][0]["macs"] = 1000.0
    fp = cache_fingerprint(m)
    assert not changed(lambda d: d["units"][0].update(macs=1000))
    # in: exits, unit costs and kinds, classes, k, every file's checksum
    assert changed(lambda d: d["units"][0].update(macs=1001.0))
    assert changed(lambda d: d["units"][0].update(kind="head"))
    assert changed(lambda d: d["exits"][0].update(name="renamed"))
    assert changed(lambda d: d["exits"][0]["units"].pop())
    assert changed(lambda d: d.update(n_classes=11))
    assert changed(lambda d: d["splits"]["holdout"]["files"]["labels.npy"].update(sha256="sha256:0"))


def test_in_memory_fingerprint_is_deterministic():
    assert small_cache().fingerprint == small_cache().fingerprint != small_cache(seed=2).fingerprint
