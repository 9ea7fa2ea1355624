"""Devices named on a command line, checked before any work: one line naming the option and why.

``--device cuda`` on a machine without a GPU, ``--device bogus`` or ``--device cuda:7`` with fewer GPUs
would otherwise fail deep inside torch after the data is loaded (or, for training, after hours).
:func:`check_device` turns the text into a ``torch.device`` or raises :class:`DeviceError`;
:func:`device_option` is the same check as an ``argparse`` type (``error: argument --device: ...``,
exit status 2). torch is imported only when a device is checked, so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .errors import ExitsError

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceError", "KNOWN_DEVICE_TYPES", "check_device", "device_option"]

KNOWN_DEVICE_TYPES = ("cpu", "cuda", "mps")


class DeviceError(ExitsError):
    """A device that does not exist, or that this machine does not have."""


def check_device(text: str) -> torch.device:
    """``text`` as a ``torch.device`` this machine has; :class:`DeviceError` (one line) otherwise."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"{text!r} is not a device; use {', '.join(KNOWN_DEVICE_TYPES)} or cuda:N") from None
    if device.type not in KNOWN_DEVICE_TYPES:
        raise DeviceError(f"{text!r}: device type {device.type!r} is not supported; use "
                          f"{', '.join(KNOWN_DEVICE_TYPES)} or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{text!r}: no CUDA device on this machine (torch {torch.__version__}, "
                              f"CUDA {torch.version.cuda or 'not built in'}); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"{text!r}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceError(f"{text!r}: no MPS device on this machine; use --device cpu")
    if device.type == "cpu" and device.index not in (None, 0):
        raise DeviceError(f"{text!r}: there is one CPU device; use --device cpu")
    return device


def device_option(text: str) -> str:
    """``argparse`` type of ``--device``: the text, once :func:`check_device` accepts it."""
    try:
        check_device(text)
    except DeviceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
