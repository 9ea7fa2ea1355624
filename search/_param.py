"""One parameter of a search (:class:`Param`): its declaration, its check and the argparse type derived
from it; the table of every parameter is ``search.params.PARAMS``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from data_cache.cli_types import float_in, int_at_least

from ._validation import SearchError
from .units import check_drop_points, drop_points_arg

__all__ = ["Param"]


@dataclass(frozen=True)
class Param:
    """One parameter: ``kind`` is ``float``, ``int``, ``points`` (an accuracy drop, ``search.units``), ``choice``,
    ``text``, ``names`` (comma-separated text or a list of strings) or ``flag``; numbers lie in
    ``[low, high]`` (``low_open``/``high_open``: the end excluded; None: unbounded), described to users
    as ``what``. ``cli``: its command-line option is ``--name-with-dashes`` (False: library only)."""

    name: str
    kind: str
    help: str
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    what: str = ""
    choices: tuple = ()
    metavar: str | None = None
    cli: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parser_type(self) -> Callable[[str], Any] | None:
        """The argparse ``type=`` of this parameter (refuses what :meth:`check` refuses, in its words)."""
        if self.kind == "float":
            return float_in(
                self.low,
                self.high,
                low_open=self.low_open,
                high_open=self.high_open,
                what=self.what,
            )
        if self.kind == "int":
            return int_at_least(
                0 if self.low is None else int(self.low),
                self.what,
                maximum=None if self.high is None else int(self.high),
            )
        if self.kind == "points":
            return drop_points_arg
        return None

    def check(self, value: Any) -> Any:
        """``value`` if it is valid for this parameter (None: not given), else a one-line SearchError."""
        if value is None or self.kind in ("text", "names") and isinstance(value, str):
            return value
        if self.kind == "points":
            return check_drop_points(value, self.name)
        if (
            self.kind == "names"
            and isinstance(value, (list, tuple))
            and all(isinstance(v, str) for v in value)
        ):
            return tuple(value)
        if self.kind == "flag":
            if isinstance(value, bool):
                return value
            raise SearchError(f"{self.name}: must be True or False, got {value!r}")
        if self.kind == "choice":
            if value in self.choices:
                return value
            raise SearchError(
                f"{self.name}: must be one of {', '.join(self.choices)}, got {value!r}"
            )
        if self.kind in ("text", "names"):
            more = " or a list of strings" if self.kind == "names" else ""
            raise SearchError(f"{self.name}: must be a string{more}, got {value!r}")
        if (
            isinstance(value, bool)
            or not isinstance(value, Integral if self.kind == "int" else Real)
            or not math.isfinite(value)
            or not self._in_range(float(value))
        ):
            raise SearchError(f"{self.name}: must be {self.what}, got {value!r}")
        return int(value) if self.kind == "int" and isinstance(value, Integral) else float(value)

    def _in_range(self, x: float) -> bool:
        low_ok = self.low is None or x > self.low or (x == self.low and not self.low_open)
        return low_ok and (
            self.high is None or x < self.high or (x == self.high and not self.high_open)
        )
