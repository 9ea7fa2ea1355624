"""Cost model ``macs``: multiply-accumulates per sample (MACs = FLOPs / 2), from the cache's unit table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._base import CostModel, register_cost_model

__all__ = ["Macs"]


@register_cost_model
class Macs(CostModel):
    """Every unit costs its MACs per sample; the runtime and the bundle router measure the same quantity."""

    name = "macs"
    quantity = "MACs"

    def unit_costs(self, units: Sequence[Any]) -> np.ndarray:
        return np.array([u.macs for u in units], dtype=np.float64)
