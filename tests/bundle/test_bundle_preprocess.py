"""bundle.preprocess (numpy + PIL) against exits.data.eval_transform on real pictures: equal bit for bit."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bundle import BundleError, make_transform
from exits.data import FASHION_MNIST_DEB_DIR, eval_transform, read_idx

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _foolbox_pictures() -> list[Image.Image]:
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    out = []
    for p in sorted(folder.glob("*_0[0-3]_*.*")):                # every kind: imagenet, cifar, mnist, ...
        with Image.open(p) as im:
            im.load()
            out.append(im)
    return out


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    found = _foolbox_pictures()
    fashion = FASHION_MNIST_DEB_DIR / "t10k-images-idx3-ubyte.gz"
    if fashion.is_file():
        found += [Image.fromarray(a) for a in read_idx(fashion)[:8]]
    if not found:
        pytest.skip("no real pictures installed (foolbox data or Fashion-MNIST)")
    wide = [im.crop((0, 0, im.width, max(1, im.height * 3 // 4))) for im in found if im.width >= 64]
    return found + wide                                            # non-square pictures too


def _manifest(cfg: dict) -> dict:
    return {"input": {"shape": list(cfg["input_size"]), "dtype": "float32",
                      **{k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if k != "input_size"}}}


CONFIGS = {
    "fashion 28 crop 1.0": {"input_size": (1, 28, 28), "interpolation": "bilinear", "mean": (0.286,),
                            "std": (0.353,), "crop_pct": 1.0, "crop_mode": "center"},
    "imagenet 224 bicubic 0.875": {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": IMAGENET_MEAN,
                                   "std": IMAGENET_STD, "crop_pct": 0.875, "crop_mode": "center"},
    "rgb 64 bilinear 0.95": {"input_size": (3, 64, 64), "interpolation": "bilinear", "mean": IMAGENET_MEAN,
                             "std": IMAGENET_STD, "crop_pct": 0.95},
    "padded crop 1.2": {"input_size": (3, 48, 48), "interpolation": "nearest", "mean": (0.5, 0.5, 0.5),
                        "std": (0.5, 0.5, 0.5), "crop_pct": 1.2, "crop_mode": "center"},
    "squash 40x56 lanczos": {"input_size": (3, 40, 56), "interpolation": "lanczos", "mean": IMAGENET_MEAN,
                             "std": IMAGENET_STD, "crop_pct": 0.9, "crop_mode": "squash"},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_equals_eval_transform_bit_for_bit(pictures, name):
    cfg = CONFIGS[name]
    torch_tf = eval_transform(cfg)
    want = torch.stack([torch_tf(im) for im in pictures]).numpy()
    got = make_transform(_manifest(cfg))(pictures)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got, want)                              # bit for bit, not within a tolerance


def test_takes_arrays_and_stacks(pictures):
    tf = make_transform(_manifest(CONFIGS["fashion 28 crop 1.0"]))
    grey = [np.asarray(im.convert("L")) for im in pictures[:3]]
    one = tf(grey[0])
    assert one.shape == (1, 1, 28, 28)
    assert np.array_equal(tf(grey), np.concatenate([tf(g) for g in grey]))
    same = [g for g in grey if g.shape == grey[0].shape]
    assert np.array_equal(tf(np.stack(same)), tf(same))


def test_refusals():
    cfg = CONFIGS["imagenet 224 bicubic 0.875"]
    with pytest.raises(BundleError, match="'border'.*not supported"):
        make_transform(_manifest({**cfg, "crop_mode": "border"}))
    with pytest.raises(BundleError, match="'center' at 224x192 is not supported"):
        make_transform(_manifest({**cfg, "input_size": (3, 224, 192)}))
    old = _manifest(cfg)
    del old["input"]["mean"]
    with pytest.raises(BundleError, match=r"input: missing \['mean'\].*export it again"):
        make_transform(old)
    tf = make_transform(_manifest(cfg))
    with pytest.raises(BundleError, match="uint8 pixels.*float32: already normalised"):
        tf(np.zeros((8, 8, 3), dtype=np.float32))
