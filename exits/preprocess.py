"""The preprocessing a model was trained with, carried by the runtime: ``rt.data_config`` and ``rt.transform``.

The data config (input size, interpolation, crop, mean, std) is the one recorded in the head checkpoint
(``exits.checkpoints``): the one the heads were trained and the cache dumped with, which is not timm's default
for the architecture (``ExitModel.data_config``; e.g. crop 0.875 instead of 1.0). :class:`Preprocess` turns
PIL images or uint8 arrays into a normalised batch with ``exits.data.eval_transform`` of that config.

:func:`check_normalised` refuses a batch whose statistics cannot come from that normalisation. Normalised
pixels in [0, 1] lie in ``[lo, hi] = [(0 - mean) / std, (1 - mean) / std]`` per channel; a batch is refused
when a channel's mean lies outside that range widened by half its width on each side, or its standard
deviation exceeds the range's width (a normalised batch has at most half of it). That catches raw 0-255
pixels and other scales; pixels in [0, 1] left unnormalised cannot be told apart by statistics (use
``rt.transform``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .errors import ExitsError

__all__ = ["InputNormalisationError", "Preprocess", "check_normalised", "normalised_range"]


class InputNormalisationError(ExitsError):
    """A batch that is not normalised as the model's recorded data config says (or not an image batch of its shape)."""


def normalised_range(data_config: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per channel, the values normalised pixels in [0, 1] take: ``(lo, hi)``, each ``(channels,)``; None when the
    config's mean or std has neither one value nor one per channel (timm's default config of a grey model keeps
    three), so there is no recorded normalisation to judge a batch by."""
    chans = int(data_config["input_size"][0])
    mean = np.asarray(data_config["mean"], dtype=np.float64).reshape(-1)
    std = np.asarray(data_config["std"], dtype=np.float64).reshape(-1)
    if mean.size not in (1, chans) or std.size not in (1, chans):
        return None
    mean, std = np.broadcast_to(mean, (chans,)), np.broadcast_to(std, (chans,))
    return (0.0 - mean) / std, (1.0 - mean) / std


def check_normalised(x: torch.Tensor, data_config: Mapping[str, Any]) -> None:
    """Raise :class:`InputNormalisationError` unless ``x`` ``(b, C, H, W)`` looks normalised as ``data_config``
    says (see the module docstring for the rule)."""
    chans = int(data_config["input_size"][0])
    if x.ndim != 4 or x.shape[1] != chans:
        raise InputNormalisationError(f"input batch of shape {tuple(x.shape)}: expected (batch, {chans}, H, W) images")
    if x.shape[0] == 0 or not x.is_floating_point():
        if not x.is_floating_point():
            raise InputNormalisationError(f"input batch of dtype {x.dtype}: expected normalised float images; pass "
                                          "the pictures through rt.transform")
        return
    flat = x.detach().float().transpose(0, 1).reshape(chans, -1)
    std, mean = (t.cpu().numpy() for t in torch.std_mean(flat, dim=1, correction=0))
    if not np.isfinite(mean).all() and not bool(torch.isfinite(flat).all()):   # finite means: every value finite
        raise InputNormalisationError("input batch holds NaN or infinite values")
    ranges = normalised_range(data_config)
    if ranges is None:
        return
    lo, hi = ranges
    width = hi - lo
    bad = np.flatnonzero((mean < lo - width / 2) | (mean > hi + width / 2) | (std > width))
    if bad.size:
        c = int(bad[0])
        raise InputNormalisationError(
            f"input batch is not normalised as the model was trained: channel {c} has mean {mean[c]:.3g} and std "
            f"{std[c]:.3g}, where normalised pixels lie in [{lo[c]:.3g}, {hi[c]:.3g}] (mean {data_config['mean']}, "
            f"std {data_config['std']}); raw 0-255 pixels? pass the pictures through rt.transform")


class Preprocess:
    """``data_config``'s evaluation transform (``exits.data.eval_transform``) over a batch of pictures.

    Call it with a PIL image, a uint8 array ``(H, W)`` or ``(H, W, 3)``, a uint8 stack ``(n, H, W[, 3])``, or a
    list of these; it returns a float32 batch ``(n, C, H, W)``.
    """

    def __init__(self, data_config: Mapping[str, Any]):
        from .data import eval_transform

        self.data_config = dict(data_config)
        self._one = eval_transform(self.data_config)

    def __call__(self, images: Any) -> torch.Tensor:
        return torch.stack([self._one(im) for im in _pictures(images)])


def _pictures(images: Any) -> list:
    """PIL images from one picture, a uint8 stack or a list of pictures."""
    from PIL import Image

    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise InputNormalisationError(f"pictures must be uint8 pixels (PIL images or uint8 arrays), got an array "
                                          f"of {images.dtype}: already normalised? then pass it to rt.run directly")
        one = images.ndim == 2 or (images.ndim == 3 and images.shape[-1] == 3)
        if one:
            return [Image.fromarray(images)]
        if images.ndim not in (3, 4):
            raise InputNormalisationError(f"pictures of shape {images.shape}: expected (H, W), (H, W, 3) or a stack "
                                          "(n, H, W[, 3])")
        return [Image.fromarray(a) for a in images]
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        out = []
        for im in images:
            out.extend(_pictures(im))
        return out
    raise InputNormalisationError(f"pictures must be PIL images or uint8 arrays (or a list of them), got "
                                  f"{type(images).__name__}")
