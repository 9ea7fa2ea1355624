"""The model carries its preprocessing: rt.data_config from the checkpoint, rt.transform, refused batches, and
the README's ExitRuntime snippet reaching exits.validate's accuracy on the same pictures."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_cache import open_cache
from data_cache.bundled import bundled_cache_path, bundled_checkpoint_path
from exits import ExitRuntime
from exits._runtime_stages import check_finite
from exits.checkpoints import read_checkpoint
from exits.data import FASHION_MNIST_DEB_DIR, eval_transform
from exits.errors import ExitsError
from exits.preprocess import InputNormalisationError, check_normalised

FASHION = {"input_size": (1, 28, 28), "interpolation": "bilinear", "mean": (0.286,), "std": (0.353,),
           "crop_pct": 1.0, "crop_mode": "center"}


@pytest.fixture(scope="module")
def bundled():
    if bundled_cache_path() is None or bundled_checkpoint_path() is None:
        pytest.skip("no demo cache and checkpoint bundled")
    return open_cache(bundled_cache_path()), bundled_checkpoint_path()


def test_runtime_carries_the_checkpoints_data_config(bundled):
    _, ckpt = bundled
    rt = ExitRuntime.from_checkpoint(ckpt, None)
    assert rt.data_config == read_checkpoint(ckpt)["data_config"]
    assert rt.data_config["crop_pct"] == 1.0
    rng = np.random.default_rng(0)
    pictures = list(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8))
    want = torch.stack([eval_transform(rt.data_config)(__import__("PIL.Image").Image.fromarray(p)) for p in pictures])
    assert torch.equal(rt.transform(pictures), want)
    assert torch.equal(rt.transform(np.stack(pictures)), want)
    assert rt.transform(pictures[0]).shape == (1, 1, 28, 28)


@pytest.mark.parametrize("scale,error,match", [(255.0, InputNormalisationError, "channel 0 has mean"),
                                               (float("nan"), ExitsError, "NaN or infinite")])
def test_batches_not_normalised_as_recorded_are_refused(bundled, scale, error, match):
    _, ckpt = bundled
    rt = ExitRuntime.from_checkpoint(ckpt, None)
    pixels = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (4, 1, 28, 28))).float()
    with pytest.raises(error, match=match):
        rt.run(pixels * (scale / 255.0) if scale == scale else pixels * scale)
    assert rt.run(rt.transform(list(pixels[:, 0].numpy().astype(np.uint8)))).predictions.shape == (4,)


def test_the_rule():
    ok = (torch.rand(8, 1, 28, 28) - 0.286) / 0.353
    check_normalised(ok, FASHION)
    check_normalised(torch.randn(8, 1, 28, 28), FASHION)                 # statistics of normalised data
    for bad in (ok * 255, ok + 5, ok * 4):
        with pytest.raises(InputNormalisationError, match="not normalised as the model was trained"):
            check_normalised(bad, FASHION)
    with pytest.raises(InputNormalisationError, match=r"expected \(batch, 1, H, W\)"):
        check_normalised(torch.zeros(2, 3, 28, 28), FASHION)
    from exits.preprocess import Preprocess
    with pytest.raises(InputNormalisationError, match="uint8 pixels.*float64"):
        Preprocess(FASHION)(np.zeros((28, 28)))


@pytest.mark.slow
def test_readme_snippet_reaches_validate_accuracy(bundled, tmp_path):
    """The README's snippet, with rt.transform on the raw test pictures, against exits.validate on the same rows."""
    if not (FASHION_MNIST_DEB_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed")
    from exits.data import load_splits
    from exits.validate import main as validate_main
    from search.pareto import main as pareto_main

    cache, ckpt = bundled
    front = tmp_path / "front.json"
    assert pareto_main([str(bundled_cache_path()), "--methods", "dp", "--max-drop", "0.5", "--export", str(front),
                        "--no-progress"]) == 0
    chosen = next(c for c in json.loads(front.read_text())["configs"] if "certificate" in c)
    report = tmp_path / "report.json"
    assert validate_main(["--config", str(front), "--checkpoint", str(ckpt), "--cache", str(bundled_cache_path()),
                          "--id", str(chosen["id"]), "--no-timing", "--no-latency", "--report", str(report)]) == 0
    measured = json.loads(report.read_text())["configs"][0]["measured"]["accuracy"]

    # the snippet, as the README writes it
    rt = ExitRuntime.from_checkpoint(ckpt, str(front), cache=str(bundled_cache_path()))
    rt.select(max_drop=0.5)                    # the cheapest one certified within 0.5 points
    assert rt.config.id == str(chosen["id"])
    holdout = load_splits("fashion_mnist", data_config=None).holdout
    rows = np.asarray(cache.sample_index("holdout"))
    correct = 0
    for start in range(0, len(rows), 500):
        part = rows[start:start + 500]
        images = [holdout.source.image(int(i)) for i in part]          # PIL pictures, straight from the dataset
        result = rt.run(rt.transform(images))
        correct += int((result.predictions.numpy() == holdout.source.labels[part]).sum())
    assert abs(100 * correct / len(rows) - 100 * measured) <= 0.1


def test_a_config_whose_mean_does_not_fit_the_channels_is_not_judged():
    """timm's default config of a grey model keeps three means: no recorded normalisation, so no refusal (and
    no broadcasting traceback)."""
    config = {"input_size": (1, 28, 28), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    check_normalised(torch.rand(4, 1, 28, 28) * 255, config)
    with pytest.raises(InputNormalisationError, match="channel 0 has mean"):
        check_normalised(torch.rand(4, 1, 28, 28) * 255, dict(config, mean=(0.5,), std=(0.5,)))


def test_finite_checks_refuse_nan_and_pass_finite_values_whose_sum_overflows():
    big = torch.full((2, 1, 4, 4), 3e38)
    check_finite(big)                                        # the sum is inf, every value finite
    with pytest.raises(InputNormalisationError, match="channel 0 has mean"):
        check_normalised(big, FASHION)                       # finite, but not normalised
    x = torch.zeros(2, 1, 4, 4)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(ExitsError, match=r"input: 1 of 32 values are NaN or infinite \(first in row 1 of 2\)"):
        check_finite(x)
    with pytest.raises(InputNormalisationError, match="holds NaN or infinite values"):
        check_normalised(x, FASHION)
