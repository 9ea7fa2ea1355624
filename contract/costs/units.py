"""Cost model ``units``: every compute unit a sample runs costs 1, whatever its size.

A constant overhead per unit (one launch and synchronisation per segment or head) dominates small batches
on a GPU; under this model the search minimises how many units samples run rather than their arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._base import CostModel, register_cost_model

__all__ = ["Units"]


@register_cost_model
class Units(CostModel):
    """Each segment, head or saver a sample runs costs 1."""

    name = "units"
    quantity = "units"

    def unit_costs(self, units: Sequence[Any]) -> np.ndarray:
        return np.ones(len(units), dtype=np.float64)
