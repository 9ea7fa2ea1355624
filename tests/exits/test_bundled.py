"""The bundled demo: its checkpoint is the model its cache was dumped from; its calibration split is unseen."""
from __future__ import annotations

import numpy as np
import pytest

from data_cache import open_cache
from data_cache.bundled import bundled_cache_path, bundled_checkpoint_path
from exits.checkpoints import model_from_checkpoint, read_checkpoint


@pytest.fixture(scope="module")
def bundled():
    if bundled_cache_path() is None or bundled_checkpoint_path() is None:
        pytest.skip("no demo cache and checkpoint bundled")
    return open_cache(bundled_cache_path()), bundled_checkpoint_path()


def test_checkpoint_is_the_model_the_cache_was_dumped_from(bundled):
    cache, ckpt = bundled
    model = model_from_checkpoint(ckpt)
    prov = cache.meta.provenance
    assert model.fingerprint() == prov["model"]["fingerprint"]
    assert model.head_fingerprint() == prov["heads"]["fingerprint"]
    assert [e.name for e in model.exits] == [e.name for e in cache.exits]


def test_calibration_split_was_kept_out_of_search_and_training(bundled):
    cache, ckpt = bundled
    assert cache.splits() == ["search", "calibration", "holdout"]
    data = read_checkpoint(ckpt)["data"]
    assert data["calibration_size"] == cache.n_samples("calibration")
    assert not np.intersect1d(cache.sample_index("search"), cache.sample_index("calibration")).size
