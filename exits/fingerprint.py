"""Weights fingerprints: ``data_cache.fingerprint.digest_arrays`` over a state dict as numpy arrays."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from data_cache.fingerprint import digest_arrays

__all__ = ["state_dict_arrays", "weights_fingerprint"]


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    try:
        return t.numpy()
    except TypeError:  # dtypes numpy lacks (bfloat16, float8): hash the raw bits, keeping the shape
        bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
        return t.view(bits).numpy()


def state_dict_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    """Every parameter and buffer of ``module`` as a numpy array, by state-dict key."""
    return {k: _to_numpy(v) for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


def weights_fingerprint(module: nn.Module) -> str:
    """``sha256:...`` of ``module``'s state dict (names, dtypes, shapes and values)."""
    return digest_arrays(state_dict_arrays(module))
