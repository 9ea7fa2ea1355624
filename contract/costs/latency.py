"""Cost model ``latency``: seconds per sample of every unit, measured at the dump (``--latency BATCH``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._base import CostModel, CostModelError, register_cost_model

__all__ = ["Latency"]


@register_cost_model
class Latency(CostModel):
    """Every unit costs its measured latency per sample (the cache's ``latency_s``), summed like MACs."""

    name = "latency"
    quantity = "latency_s"

    def unit_costs(self, units: Sequence[Any]) -> np.ndarray:
        missing = [u.name for u in units if getattr(u, "latency_s", None) is None]
        if missing:
            raise CostModelError(
                f"objective 'latency' needs measured latency for every unit; this cache has none "
                f"for {missing[:3]}{'...' if len(missing) > 3 else ''}; dump with --latency or use "
                "macs"
            )
        return np.array([u.latency_s for u in units], dtype=np.float64)
