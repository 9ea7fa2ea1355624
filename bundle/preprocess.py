"""The bundle's preprocessing with numpy and PIL alone: pictures to the normalised batch its graphs take.

:func:`make_transform` reads the manifest's ``input`` (``shape`` = channels, height, width; ``interpolation``,
``crop_pct``, ``crop_mode``, ``mean``, ``std``: the data config the heads were trained with) and returns a function
doing what ``exits.data.eval_transform`` (timm's evaluation transform) does, step by step: convert to RGB or grey,
resize the shorter side to ``floor(size / crop_pct)`` with PIL (``crop_mode`` ``squash``: both sides), crop the
centre (padding with zeros when smaller), divide by 255 and normalise in float32. It gives the same float32 values,
bit for bit (``tests/bundle/test_bundle_preprocess.py``). Non-square inputs in ``center`` mode and the ``border`` mode
are refused (``BundleError``): preprocess those on the host with ``exits.data.eval_transform``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import BundleError

__all__ = ["make_transform"]

_RESAMPLE = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
DEFAULT_CROP_PCT = 0.875  # timm's, when the config names none


def _input_spec(manifest: Any) -> Mapping[str, Any]:
    doc = getattr(manifest, "doc", manifest)
    spec = doc.get("input") if isinstance(doc, Mapping) else None
    if not isinstance(spec, Mapping):
        raise BundleError(
            "manifest: no 'input' record; export the bundle again with python -m exits.export_bundle"
        )
    missing = [k for k in ("shape", "mean", "std", "interpolation") if k not in spec]
    if missing:
        raise BundleError(
            f"manifest: input: missing {missing} (a bundle exported before the manifest recorded the "
            "data config); export it again with python -m exits.export_bundle"
        )
    return spec


def make_transform(manifest: Any) -> Callable[[Any], np.ndarray]:
    """A function from pictures (a PIL image, a uint8 array ``(H, W)`` / ``(H, W, 3)``, a uint8 stack
    ``(n, H, W[, 3])`` or a list of these) to a float32 batch ``(n, C, H, W)`` as the manifest's input says.
    ``manifest``: a :class:`~bundle.manifest.Manifest` or its document."""
    from PIL import Image

    spec = _input_spec(manifest)
    chans, height, width = (int(v) for v in spec["shape"])
    mean = np.broadcast_to(np.asarray(spec["mean"], dtype=np.float32), (chans,)).reshape(
        chans, 1, 1
    )
    std = np.broadcast_to(np.asarray(spec["std"], dtype=np.float32), (chans,)).reshape(chans, 1, 1)
    interp = spec["interpolation"]
    if interp not in _RESAMPLE:
        raise BundleError(
            f"manifest: input: interpolation {interp!r} is not one of {list(_RESAMPLE)}"
        )
    resample = getattr(Image.Resampling, interp.upper())
    crop_pct = float(spec.get("crop_pct") or DEFAULT_CROP_PCT)
    mode = spec.get("crop_mode") or "center"
    if mode not in ("center", "squash") or (mode == "center" and height != width):
        raise BundleError(
            f"manifest: input: crop_mode {mode!r} at {height}x{width} is not supported by "
            "bundle.preprocess; preprocess on the host with exits.data.eval_transform"
        )
    scale = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    pil_mode = "RGB" if chans == 3 else "L"

    def one(im: Any) -> np.ndarray:
        im = im if im.mode == pil_mode else im.convert(pil_mode)
        w, h = im.size
        if mode == "squash":
            size = scale
        else:  # the shorter side to scale, as torchvision
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = scale[0], int(scale[0] * long / short)
            size = (new_long, new_short) if w <= h else (new_short, new_long)
        if (h, w) != size:
            im = im.resize((size[1], size[0]), resample)
        a = np.asarray(im, dtype=np.uint8)
        a = a.reshape(a.shape[0], a.shape[1], -1)
        return _centre_crop(a, height, width).transpose(2, 0, 1)

    def transform(images: Any) -> np.ndarray:
        pixels = np.stack([one(im) for im in _pictures(images)])
        return (pixels.astype(np.float32) / np.float32(255.0) - mean) / std

    return transform


def _centre_crop(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(height, width)`` from the centre of ``a`` ``(h, w, c)``, zero-padded first when smaller (torchvision)."""
    h, w = a.shape[:2]
    if height > h or width > w:
        top, left = max(height - h, 0) // 2, max(width - w, 0) // 2
        bottom, right = (max(height - h, 0) + 1) // 2, (max(width - w, 0) + 1) // 2
        a = np.pad(a, ((top, bottom), (left, right), (0, 0)))
        h, w = a.shape[:2]
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return a[top : top + height, left : left + width]


def _pictures(images: Any) -> list:
    from PIL import Image

    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise BundleError(
                f"pictures must be uint8 pixels (PIL images or uint8 arrays), got an array of "
                f"{images.dtype}: already normalised? then pass it to router.run directly"
            )
        if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] == 3):
            return [Image.fromarray(images)]
        if images.ndim not in (3, 4):
            raise BundleError(
                f"pictures of shape {images.shape}: expected (H, W), (H, W, 3) or a stack (n, H, W[, 3])"
            )
        return [Image.fromarray(a) for a in images]
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        return [p for im in images for p in _pictures(im)]
    raise BundleError(
        f"pictures must be PIL images or uint8 arrays (or a list of them), got {type(images).__name__}"
    )
