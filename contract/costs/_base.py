"""The cost-model contract: a registered ``CostModel`` type and the ``CostTable`` it builds from a cache.

A cost model says what a sample pays for the compute units it runs (backbone segments, heads, savers). Its
name is the ``objective`` of every ``exitconfig/1`` export; search, runtime, bundle and validation read that
name back through :func:`get_cost_model`, which refuses a name this version does not know.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "CostModelError",
    "CostTable",
    "CostModel",
    "register_cost_model",
    "get_cost_model",
    "list_cost_models",
    "DEFAULT_COST_MODEL",
    "MEASURED_COST_MODEL",
]

DEFAULT_COST_MODEL = "macs"
"""The objective of an export that names none."""
MEASURED_COST_MODEL = "macs"
"""What the runtime and the bundle router measure and account per sample (the unit table's MACs)."""


class CostModelError(ValueError):
    """A cost model that is unknown, or a cache whose unit table it cannot charge; one line."""


@dataclass(frozen=True)
class CostTable:
    """Per-unit costs of one cache under one cost model: ``unit_costs`` ``(n_units,)`` float64, ``needs``
    ``(n_exits, n_units)`` bool (the units each exit's output needs; the last exit is final), ``unit_names``,
    and ``objective``, the cost model's name. A sample leaving at an enabled exit pays every unit the enabled
    exits up to and including that one need, each once."""

    unit_costs: np.ndarray
    needs: np.ndarray
    unit_names: tuple[str, ...]
    objective: str = DEFAULT_COST_MODEL

    @property
    def final_exit(self) -> int:
        return self.needs.shape[0] - 1

    @property
    def additive(self) -> bool:
        """Whether a sample's cost is its own path's (``exit_costs``), so per-unit and per-exit sums are exact."""
        return True

    def mean_cost_of(self, enabled: Sequence[int], counts: np.ndarray) -> float:
        """Mean cost per sample of a configuration enabling ``enabled`` whose samples leave at each of them, then
        at the final exit, ``counts`` times: what every evaluation path calls (a non-additive table overrides it)."""
        counts = np.asarray(counts)
        return float(counts @ self.exit_costs(enabled)) / max(int(counts.sum()), 1)

    @property
    def base_cost(self) -> float:
        """Cost of the final exit with no early exit enabled."""
        return float(self.unit_costs[self.needs[-1]].sum())

    def exit_costs(self, enabled: Sequence[int]) -> np.ndarray:
        """Cost of leaving at each of ``enabled`` (exit indices, execution order) and then at the final exit."""
        path = list(enabled) + [self.final_exit]
        used = np.logical_or.accumulate(self.needs[path], axis=0)
        return used @ self.unit_costs

    def paired(self, partners: Mapping[int, int]) -> CostTable:
        """This table with each exit ``e`` of ``partners`` (exit -> its partner exit) also paying its partner's units:
        the cost of deciding at ``e`` with a rule that reads the partner (``contract.rules.partner_exit``), whose
        head runs for every row reaching ``e``. Each unit is still paid once."""
        if not partners:
            return self
        needs = self.needs.copy()
        for e, p in partners.items():
            needs[e] |= self.needs[p]
        return dataclasses.replace(self, needs=needs)

    def standalone_cost(self, exit_index: int) -> float:
        """Cost of leaving at ``exit_index`` when it is the only enabled early exit."""
        return float(self.unit_costs[self.needs[exit_index]].sum())


class CostModel(ABC):
    """A registered way of charging samples for the units they run (``register_cost_model``).

    A subclass sets ``name`` (the export's ``objective``), ``quantity`` (what a cost counts, in messages)
    and implements :meth:`unit_costs`. ``additive``: a sample's cost depends only on its own path, so the
    cost of a configuration follows from its exit fractions (:meth:`relative_cost`) and the search engines'
    per-exit sums hold. A model that is not additive (wall-clock time of a batch under compaction, where a
    unit's time depends on how many rows of the batch reach it) sets it False and overrides
    :meth:`mean_cost`, which sees every sample's exit in order.
    """

    name: ClassVar[str] = ""
    quantity: ClassVar[str] = ""
    additive: ClassVar[bool] = True

    @abstractmethod
    def unit_costs(self, units: Sequence[Any]) -> np.ndarray:
        """Cost per sample of every unit ``(n_units,)`` float64, from a cache's unit records (``name``,
        ``kind``, ``macs``, ``latency_s``); ``CostModelError`` (one line) when the table lacks what it needs."""

    def table(self, units: Sequence[Any], exits: Sequence[Any]) -> CostTable:
        """The cost table of a cache's ``units`` and ``exits`` (records with ``units``: names each needs)."""
        names = tuple(u.name for u in units)
        col = {n: i for i, n in enumerate(names)}
        needs = np.zeros((len(exits), len(names)), dtype=bool)
        for i, e in enumerate(exits):
            needs[i, [col[u] for u in e.units]] = True
        return CostTable(
            np.asarray(self.unit_costs(units), dtype=np.float64), needs, names, self.name
        )

    def mean_cost(self, table: CostTable, enabled: Sequence[int], where: np.ndarray) -> float:
        """Mean cost per sample of a configuration with ``enabled`` early exits (execution order) whose samples
        leave at ``where`` ``(n_samples,)`` (exit indices, in the order the samples come)."""
        where = np.asarray(where)
        path = [*enabled, table.final_exit]
        counts = np.array([np.count_nonzero(where == e) for e in path], dtype=np.int64)
        return float(counts @ table.exit_costs(enabled)) / max(len(where), 1)

    def relative_cost(
        self, table: CostTable, enabled: Sequence[int], fractions: Sequence[float]
    ) -> float:
        """Cost relative to the base model of a configuration whose samples leave at ``enabled`` then at the
        final exit in ``fractions``; only an additive model can tell it from fractions alone."""
        if not self.additive:
            raise CostModelError(
                f"cost model {self.name!r} is not additive: its cost needs every sample's exit "
                "(mean_cost), not exit fractions"
            )
        return (
            float(np.dot(np.asarray(fractions, dtype=np.float64), table.exit_costs(enabled)))
            / table.base_cost
        )


_REGISTRY: dict[str, CostModel] = {}


def register_cost_model(cls: type[CostModel]) -> type[CostModel]:
    """Class decorator: register a cost model under its ``name`` (a name registered twice is refused). Its
    instance built without arguments answers :func:`get_cost_model` by name; a model bound to measurements
    (``time``: a measured table and a batch size) takes them as keyword parameters at lookup."""
    if not cls.name or cls.name in _REGISTRY:
        raise CostModelError(
            f"cost model {cls.__name__}: name {cls.name!r} is empty or already registered"
        )
    _REGISTRY[cls.name] = cls()
    return cls


def list_cost_models() -> list[str]:
    """Names of the registered cost models, in registration order (the default first)."""
    return list(_REGISTRY)


def get_cost_model(name: str | CostModel, **params: Any) -> CostModel:
    """The registered cost model ``name`` (a model is returned as it is); with ``params``, a new instance of it
    bound to them (``get_cost_model("time", estimator=...)``). An unknown name is refused in one line naming the
    known ones."""
    if isinstance(name, CostModel):
        return name
    model = _REGISTRY.get(name) if isinstance(name, str) else None
    if model is None:
        raise CostModelError(
            f"unknown objective {name!r}: this version knows the cost models {list_cost_models()}"
        )
    return type(model)(**params) if params else model
