"""Measured time tables of a cache (``costtable/1``): each unit's time as a function of the rows it runs on.

``python -m exits.profile`` measures, on one target (device, threads, batch size, runtime), the time of
every compute unit (or bundle graph), of the base model and of the runtime's own steps at each batch size
``n`` of a grid up to the profiled batch size, and writes it as ``CACHE/cost_tables/<name>.json``: a sidecar
that the manifest does not list, so the cache's fingerprint, integrity check and ``--overwrite`` never read
or touch it, and several tables (one per target) live side by side. A table holds the fingerprints of the
cache (and of the backbone) it was profiled for; :func:`read_cost_table` refuses it for any other cache, a
grid that stops below the batch size asked, unknown units, and timings that are not positive and finite, in
one line naming the file and the field (``docs/cache-format.md``, "Cost tables"). numpy only.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from . import format as fmt
from .errors import CacheError
from .schema import split_name_problem

__all__ = [
    "COST_TABLE_FORMAT",
    "RUNTIMES",
    "MAX_BATCH_SIZE",
    "ITEM_KINDS",
    "UNIT_ITEM_KINDS",
    "CostTableError",
    "TimedItem",
    "TimeTable",
    "cost_table_path",
    "list_cost_tables",
    "write_cost_table",
    "read_cost_table",
    "check_table_name",
    "table_name_option",
    "profile_grid",
    "interpolate",
    "parse_cost_table",
]

COST_TABLE_FORMAT = "costtable/1"
RUNTIMES = ("eager", "onnx")
UNIT_ITEM_KINDS = ("segment", "head", "saver", "graph")  # items that run cache units
ITEM_KINDS = (*UNIT_ITEM_KINDS, "base", "step", "finish", "collect", "path")
# what a timing may be: from the profile's floor (a difference of two timings is kept at >= 1 ns) to a day; beyond,
# sums over items and ratios to the base overflow downstream
MIN_TIME_S, MAX_TIME_S = 1e-9, 86400.0
# the largest batch a table may reach: the time model holds arrays over 0..B rows per item
MAX_BATCH_SIZE = 1 << 16


class CostTableError(CacheError):
    """A cost table that is missing, malformed, or profiled for another cache, model or batch size."""


def profile_grid(batch_size: int) -> tuple[int, ...]:
    """The batch sizes a profile measures: the powers of two below ``batch_size``, and ``batch_size``."""
    grid = [1 << i for i in range(batch_size.bit_length()) if 1 << i < batch_size]
    return (*grid, batch_size)


@dataclass(frozen=True)
class TimedItem:
    """One measured thing: a unit (or bundle graph) running ``units``, the base model, or a runtime step.

    ``kind``: ``segment``/``head``/``saver``/``graph`` (runs ``units``), ``base`` (the whole base model),
    ``step`` (scoring, thresholding and compaction at enabled exit ``exit``), ``finish`` (scoring at the
    final exit), ``collect`` (the runtime's own per-batch cost: input checks, the loop, the result; once per
    batch), ``path`` (a bundle's batch-1 graph run by one row that leaves at ``exit``, an early exit or the final
    one; it serves one row, so every grid point holds that time). ``median_s[i]`` is the median over rounds of one
    call's time on ``grid[i]`` rows; ``min_s``/``max_s`` the rounds' spread. ``after`` (path items, optional): the
    median time of this path's call made right after a call that left at each exit named (every path's exit), as a
    stream of rows that leave at different exits meets it; ``median_s`` is its time after a call of its own.
    """

    name: str
    kind: str
    median_s: tuple[float, ...]
    min_s: tuple[float, ...]
    max_s: tuple[float, ...]
    units: tuple[str, ...] = ()
    exit: str | None = None
    after: dict[str, float] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class TimeTable:
    """A named table: what it was profiled for (``cache_fingerprint``, ``model_fingerprint``), on what
    (``target``: device, device_name, threads, batch_size, runtime, score, versions, date, loadavg, ...),
    how (``measurement``: rounds, warm-up, repeats), the ``grid`` of row counts and the ``items``."""

    name: str
    cache_fingerprint: str
    model_fingerprint: str | None
    target: dict[str, Any]
    measurement: dict[str, Any]
    grid: tuple[int, ...]
    items: tuple[TimedItem, ...]

    @property
    def batch_size(self) -> int:
        return int(self.target["batch_size"])

    @property
    def runtime(self) -> str:
        return str(self.target["runtime"])

    def of_kind(self, *kinds: str) -> list[TimedItem]:
        return [it for it in self.items if it.kind in kinds]

    def item(self, name: str) -> TimedItem:
        for it in self.items:
            if it.name == name:
                return it
        raise CostTableError(f"cost table {self.name!r}: no item {name!r}")

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the table's canonical JSON: what an export searched on it records (``cost_table.fingerprint``)."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": COST_TABLE_FORMAT,
            "name": self.name,
            "cache": {"fingerprint": self.cache_fingerprint},
            "model": {"fingerprint": self.model_fingerprint},
            "target": self.target,
            "measurement": self.measurement,
            "grid": list(self.grid),
            "items": [
                {
                    k: (list(v) if isinstance(v, tuple) else v)
                    for k, v in asdict(it).items()
                    if k != "after" or v is not None
                }
                for it in self.items
            ],
        }


def check_table_name(name: Any) -> str:
    """``name`` if it can name a table (a file name: letters, digits, ``_ - .``), else CostTableError."""
    if not _plain_name(name):
        raise CostTableError(
            f"{str(name)[:60]!r} is not a cost table name: letters, digits, '_', '-', '.', "
            "not starting with '.', at most 250 characters"
        )
    return name


def table_name_option(text: str) -> str:
    """argparse type of a table name option (``--name``, ``--cost-table``): a usage error naming the option."""
    import argparse

    try:
        return check_table_name(text)
    except CostTableError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _plain_name(name: Any) -> bool:
    """A file name a table can take: a split's name rule (``cost_tables`` itself is fine here)."""
    return name in fmt.RESERVED_NAMES or not split_name_problem(name)


def cost_table_path(cache_dir: str | Path, name: str) -> Path:
    return Path(cache_dir) / fmt.COST_TABLES_DIR / f"{check_table_name(name)}.json"


def list_cost_tables(cache_dir: str | Path) -> list[str]:
    """Names of the tables stored beside the cache at ``cache_dir`` (not checked)."""
    folder = Path(cache_dir) / fmt.COST_TABLES_DIR
    return sorted(p.stem for p in folder.glob("*.json") if p.is_file()) if folder.is_dir() else []


def write_cost_table(cache_dir: str | Path, table: TimeTable, *, overwrite: bool = False) -> Path:
    """Write ``table`` as ``cache_dir/cost_tables/<name>.json`` atomically; an existing one only with ``overwrite``."""
    from .outputs import check_output_file, write_text_atomic

    path = cost_table_path(cache_dir, table.name)
    parse_cost_table(table.to_json(), str(path))  # never write what the reader would refuse
    path.parent.mkdir(exist_ok=True)
    check_output_file(path, overwrite=overwrite, option="--name")
    write_text_atomic(
        path, json.dumps(table.to_json(), indent=1) + "\n", option="--name", overwrite=overwrite
    )
    return path


def read_cost_table(cache: Any, name: str, *, batch_size: int | None = None) -> TimeTable:
    """The table ``name`` of ``cache`` (a folder or an opened cache with a ``path``), checked against it:
    its cache and backbone fingerprints, units, grid (up to ``batch_size`` when given) and timings."""
    if not hasattr(cache, "fingerprint"):
        from .reader import open_cache

        cache = open_cache(cache)
    folder = getattr(cache, "path", None)
    if folder is None:
        raise CostTableError(
            "cost tables live beside a cache folder; open the cache from its folder"
        )
    path = cost_table_path(folder, name)
    where = f"{fmt.COST_TABLES_DIR}/{path.name}"
    if not path.is_file():
        known = list_cost_tables(folder)
        there = "tables: " + ", ".join(known) if known else "none"
        raise CostTableError(
            f"{folder}: no cost table {name!r} ({there}); "
            f"measure one with python -m exits.profile --cache {folder} --name {name}"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CostTableError(f"{where}: not readable JSON ({type(exc).__name__})") from None
    table = parse_cost_table(doc, where)
    if table.name != name:  # an export records the name: it must lead back to this file
        raise CostTableError(
            f"{where}: name: {doc.get('name')!r}, but the file is {where}: a table is named after its "
            f"file (set name to {name!r}, or copy it to {table.name}.json)"
        )
    _check_against(table, cache, where, batch_size)
    return table


def _check_against(table: TimeTable, cache: Any, where: str, batch_size: int | None) -> None:
    if table.cache_fingerprint != cache.fingerprint:
        raise CostTableError(
            f"{where}: cache.fingerprint: profiled for cache {table.cache_fingerprint[:19]}..., not "
            f"this one ({cache.fingerprint[:19]}...); profile this cache again"
        )
    dumped = ((cache.meta.provenance or {}).get("model") or {}).get("fingerprint")
    if dumped is not None and table.model_fingerprint not in (None, dumped):
        raise CostTableError(
            f"{where}: model.fingerprint: profiled on backbone "
            f"{str(table.model_fingerprint)[:19]}..., the cache was dumped from {dumped[:19]}..."
        )
    known = {u.name for u in cache.units}
    for it in table.items:
        unknown = [u for u in it.units if u not in known]
        if unknown:
            raise CostTableError(
                f"{where}: items.{it.name}.units: {unknown[0]!r} is not a unit of this cache"
            )
    early = {e.name for e in cache.exits[:-1]}
    for it in table.of_kind("step"):
        if it.exit not in early:
            raise CostTableError(
                f"{where}: items.{it.name}.exit: {it.exit!r} is not an early exit of this cache"
            )
    every = {e.name for e in cache.exits}
    for it in table.of_kind("path"):
        if it.exit not in every:
            raise CostTableError(
                f"{where}: items.{it.name}.exit: {it.exit!r} is not an exit of this cache"
            )
    if batch_size is not None and table.grid[-1] < batch_size:
        raise CostTableError(
            f"{where}: grid: reaches {table.grid[-1]} rows, batch size {batch_size} asked; "
            f"profile with --batch-size {batch_size}"
        )


def parse_cost_table(doc: Any, where: str) -> TimeTable:
    """A TimeTable from its JSON, or CostTableError naming the first problem (file and field)."""

    def bad(fieldname: str, problem: str) -> CostTableError:
        return CostTableError(f"{where}: {fieldname}: {problem}")

    if not isinstance(doc, Mapping) or doc.get("format") != COST_TABLE_FORMAT:
        got = doc.get("format") if isinstance(doc, Mapping) else type(doc).__name__
        raise bad("format", f"{got!r} is not {COST_TABLE_FORMAT!r}")
    name = doc.get("name")
    if not _plain_name(name):
        raise bad("name", f"{repr(name)[:60]} is not a cost table name (a plain file name)")
    cache_fp = _record(doc, "cache").get("fingerprint")
    if not isinstance(cache_fp, str) or not cache_fp.startswith("sha256:"):
        raise bad("cache.fingerprint", "missing; a table must say which cache it was profiled for")
    model_fp = _record(doc, "model").get("fingerprint")
    if model_fp is not None and not (isinstance(model_fp, str) and model_fp.startswith("sha256:")):
        raise bad("model.fingerprint", f"must be 'sha256:...' or null (got {str(model_fp)[:40]!r})")
    target, measurement = doc.get("target"), doc.get("measurement", {})
    if not isinstance(measurement, Mapping):
        raise bad("measurement", "must be an object (rounds, min_time_s, ...)")
    grid = doc.get("grid")
    if (
        not isinstance(grid, list)
        or not grid
        or not all(_is_int(n) and 1 <= n <= MAX_BATCH_SIZE for n in grid)
        or any(b <= a for a, b in pairwise(grid))
    ):
        raise bad("grid", f"must be increasing row counts from 1 to {MAX_BATCH_SIZE}")
    target = _check_target(target, grid[-1], bad)
    items = doc.get("items")
    if not isinstance(items, list) or not items:
        raise bad("items", "must be a non-empty list")
    parsed = tuple(_item(d, i, len(grid), bad) for i, d in enumerate(items))
    _check_items(parsed, bad)
    return TimeTable(
        str(name), cache_fp, model_fp, dict(target), dict(measurement), tuple(grid), parsed
    )


def _record(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, Mapping) else {}


def _check_target(target: Any, batch_size: int, bad: Any) -> Mapping[str, Any]:
    """``target`` when it has the fields every reader relies on: device, threads, runtime, batch size (= the grid's
    end)."""
    if not isinstance(target, Mapping):
        raise bad("target", "must be an object (device, threads, batch_size, runtime, ...)")
    if not isinstance(target.get("device"), str) or not target["device"]:
        raise bad("target.device", f"must be a non-empty string (got {target.get('device')!r})")
    threads = target.get("threads")
    if threads is not None and not (_is_int(threads) and threads >= 1):
        raise bad("target.threads", f"must be an integer >= 1 or null (got {threads!r})")
    if target.get("runtime") not in RUNTIMES:
        raise bad("target.runtime", f"{target.get('runtime')!r} is not one of {list(RUNTIMES)}")
    if not _is_int(target.get("batch_size")) or target["batch_size"] != batch_size:
        raise bad(
            "target.batch_size", f"{target.get('batch_size')!r}, but the grid ends at {batch_size}"
        )
    return target


def _check_items(items: tuple[TimedItem, ...], bad: Any) -> None:
    """One time per thing: unique names, one base (required), finish and collect, one step and one path per exit,
    each unit timed by one item (a second would be counted twice, or ignored)."""
    names = [it.name for it in items]
    if len(set(names)) != len(names):
        raise bad("items", "names must be unique")
    if not any(it.kind == "base" for it in items):
        raise bad("items", "no item of kind 'base' (the base model's time)")
    once: dict[str, str] = {}  # kind (base, finish, collect) -> item
    steps: dict[str, str] = {}  # exit -> its step item
    paths: dict[str, str] = {}  # exit -> its path item
    timed: dict[str, str] = {}  # unit -> the item timing it
    for it in items:
        if it.kind in ("base", "finish", "collect"):
            if it.kind in once:
                raise bad(
                    f"items.{it.name}", f"a second item of kind {it.kind!r} ({once[it.kind]!r})"
                )
            once[it.kind] = it.name
        if it.exit is not None:
            seen = steps if it.kind == "step" else paths
            if it.exit in seen:
                raise bad(f"items.{it.name}.exit", f"exit {it.exit!r} has a {it.kind} already")
            seen[it.exit] = it.name
        for u in it.units:
            if u in timed:
                raise bad(
                    f"items.{it.name}.units", f"unit {u!r} is timed by item {timed[u]!r} already"
                )
            timed[u] = it.name
    _check_after(items, bad)


def _check_after(items: tuple[TimedItem, ...], bad: Any) -> None:
    """Paths timed after one another: every path, or none, after every path (the model needs the whole matrix)."""
    paths = [it for it in items if it.kind == "path"]
    with_after = [it for it in paths if it.after is not None]
    if not with_after:
        return
    exits = {str(it.exit) for it in paths}  # a path names its exit (_item)
    for it in paths:
        if it.after is None:
            raise bad(
                f"items.{it.name}.after",
                f"missing, but item {with_after[0].name!r} has one: "
                "every path is timed after every path, or none is",
            )
        unknown, missing = sorted(set(it.after) - exits), sorted(exits - set(it.after))
        if unknown or missing:
            odd = f"{unknown[0]!r} is not one" if unknown else f"{missing[0]!r} is missing"
            raise bad(
                f"items.{it.name}.after",
                f"must name exactly the paths' exits {sorted(exits)} ({odd})",
            )


TIMING_RANGE = "timings must be positive and finite, from 1 ns to a day (seconds per call)"


def _is_timing(t: Any) -> bool:
    """A number of seconds a table may hold (``MIN_TIME_S`` to ``MAX_TIME_S``; not a bool)."""
    return (
        isinstance(t, (int, float))
        and not isinstance(t, bool)
        and math.isfinite(t)
        and MIN_TIME_S <= t <= MAX_TIME_S
    )


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _item(d: Any, i: int, n_grid: int, bad: Any) -> TimedItem:
    if (
        not isinstance(d, Mapping)
        or not isinstance(d.get("name"), str)
        or d.get("kind") not in ITEM_KINDS
    ):
        raise bad(f"items[{i}]", f"needs a name and a kind in {list(ITEM_KINDS)}")
    name = d["name"]
    units = d.get("units", [])
    if (
        not isinstance(units, list)
        or not all(isinstance(u, str) for u in units)
        or (d["kind"] in UNIT_ITEM_KINDS) != bool(units)
    ):
        raise bad(
            f"items.{name}.units", "a list of unit names, non-empty exactly for units and graphs"
        )
    values = []
    for key in ("median_s", "min_s", "max_s"):
        v = d.get(key)
        if not isinstance(v, list) or len(v) != n_grid:
            raise bad(f"items.{name}.{key}", f"must hold one time per grid point ({n_grid})")
        if not all(_is_timing(t) for t in v):
            raise bad(f"items.{name}.{key}", TIMING_RANGE)
        values.append(tuple(float(t) for t in v))
    if not all(lo <= m <= hi for m, lo, hi in zip(*values, strict=True)):
        raise bad(f"items.{name}", "min_s <= median_s <= max_s at every grid point")
    exit_name = d.get("exit")
    if (d["kind"] in ("step", "path")) != isinstance(exit_name, str):
        raise bad(f"items.{name}.exit", "a step or a path names its exit; nothing else does")
    median_s, min_s, max_s = values
    return TimedItem(
        name,
        d["kind"],
        median_s,
        min_s,
        max_s,
        units=tuple(units),
        exit=exit_name,
        after=_after(d, name, bad),
    )


def _after(d: Mapping[str, Any], name: str, bad: Any) -> dict[str, float] | None:
    """A path's ``after`` map (previous call's exit -> seconds), checked; None when absent."""
    after = d.get("after")
    if after is None:
        return None
    if d["kind"] != "path":
        raise bad(f"items.{name}.after", "only a path is timed after other paths")
    if not isinstance(after, Mapping) or not after:
        raise bad(f"items.{name}.after", "must map each path's exit to seconds")
    for prev, t in after.items():
        if not _is_timing(t):
            raise bad(f"items.{name}.after.{prev}", TIMING_RANGE)
    return {str(k): float(v) for k, v in after.items()}


def interpolate(
    grid: tuple[int, ...] | np.ndarray, times: tuple[float, ...] | np.ndarray, n: np.ndarray
) -> np.ndarray:
    """Time at row counts ``n``: piecewise linear through ``(0, 0)`` and the grid; 0 rows cost nothing."""
    xs = np.concatenate([[0.0], np.asarray(grid, dtype=np.float64)])
    ys = np.concatenate([[0.0], np.asarray(times, dtype=np.float64)])
    return np.interp(np.asarray(n, dtype=np.float64), xs, ys)
