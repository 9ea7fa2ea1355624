"""Issue 20: NaN or infinite images are refused by the runtime and the bundle router alike, in the same words
(before, both predicted something for them, and the two disagreed)."""
from __future__ import annotations

import numpy as np
import pytest
from _bundles import resnet_setup

from bundle import BundleError, open_bundle
from exits.errors import ExitsError
from exits.runtime import ExitRuntime


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    return resnet_setup(tmp_path_factory.mktemp("resnet"))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_runtime_and_router_refuse_non_finite_images_alike(resnet, value):
    model, splits, cache, doc, path = resnet
    router, runtime = open_bundle(path), ExitRuntime(model, doc, cache=cache)
    x = splits["holdout"].images[:4].clone()
    x[2, 0, 1, 1] = float(value)
    with pytest.raises(ExitsError) as from_runtime:
        runtime.run(x)
    with pytest.raises(BundleError) as from_router:
        router.run(x.numpy())
    assert str(from_runtime.value) == str(from_router.value)
    assert str(from_router.value).startswith("input: 1 of ") and "first in row 2 of 4" in str(from_router.value)
    x[2, 0, 1, 1] = 0.0                                     # the same batch, finite: both run it
    assert runtime.run(x).predictions.tolist() == router.run(x.numpy()).predictions.tolist()
