"""The manifest schema: exact types, ranges, names and costs; every problem one line ``file: field: problem``.

Hand-written rather than a validation library (``docs/cache-format.md``, "Schema"): the rules reach
across fields (exits name units, shapes follow ``n_exits``, costs must not overflow), the messages
follow the project's one-line form, and the search side stays numpy-only. Unknown fields are ignored;
known fields must have exactly their type (an integer is an ``int``, never a float, a bool or a string).
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, TypeGuard

from . import format as fmt

__all__ = [
    "MAX_CLASSES",
    "MAX_NAME_LENGTH",
    "manifest_problems",
    "split_name_problem",
    "name_problem",
    "cost_problems",
    "file_entry_problems",
]

MAX_CLASSES = (
    1 << 24
)  # float32 holds every class id exactly up to 2**24; no classifier comes near it
MAX_NAME_LENGTH = 255  # a split name is a folder name
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


def _is_int(x: Any) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> TypeGuard[int | float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _got(x) -> str:
    text = repr(x)
    return f"got {text[:60]}{'...' if len(text) > 60 else ''}"


def split_name_problem(name) -> str | None:
    """Why ``name`` cannot be a split (a folder name: letters, digits, ``_ - .``, not starting with ``.``)."""
    if not isinstance(name, str) or not _SPLIT_NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        return (
            f"{name!r} is not a split name: a folder name of letters, digits, '_', '-', '.', not starting "
            f"with '.', at most {MAX_NAME_LENGTH} characters"
        )
    if name in fmt.RESERVED_NAMES:
        return f"{name!r} is not a split name: the cache keeps its cost tables in that folder"
    return None


def name_problem(name) -> str | None:
    """Why ``name`` cannot name an exit, a unit or a head: a plain name, never a path.

    ``/`` may separate parts (``stages.1.blocks.2/linear``), but no part is empty, ``.`` or ``..``;
    no backslash, no control character.
    """
    if not isinstance(name, str) or not name:
        return f"must be a non-empty string ({_got(name)})"
    if "\\" in name or any(unicodedata.category(ch) == "Cc" for ch in name):
        return f"{name!r}: no backslash or control character allowed"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return f"{name!r}: a plain name, not a path: no leading '/', no empty, '.' or '..' part"
    return None


def cost_problems(
    measure: str,
    unit_costs: dict[str, float],
    base_units,
    max_samples: int,
    *,
    base_field: str = "exits",
) -> list[str]:
    """The cost checks the cache and the search share: every sum stays finite, the base cost is positive.

    ``unit_costs`` maps unit name -> cost (finite, >= 0 already); ``base_units`` are the final exit's
    (``base_field`` names them in messages). The search multiplies a cost by at most ``max_samples``
    and divides it by the base cost.
    """
    try:
        total = math.fsum(unit_costs.values())
    except OverflowError:  # an intermediate sum overflowed
        total = math.inf
    if math.isinf(total) or not math.isfinite(total * max(1, max_samples)):
        return [
            f"units: the {measure} of all units sum to {total:g}, which overflows when multiplied by "
            f"{max(1, max_samples)} samples; give costs in a smaller unit"
        ]
    base = math.fsum(unit_costs[u] for u in set(base_units) if u in unit_costs)
    if not base > 0:
        return [
            f"{base_field}: the final exit costs {base:g} {measure} (the base cost); it must be positive"
        ]
    if not math.isfinite(total / base):
        return [
            f"units: the {measure} of all units ({total:g}) over the base cost ({base:g}) overflows"
        ]
    return []


def file_entry_problems(
    split: str, files, expected: dict[str, tuple[tuple, str]], *, required
) -> list[str]:
    """Problems of ``splits.<split>.files``: known file names only, each ``{sha256, shape, dtype}`` exact.

    ``expected[fname] = (shape, dtype.str)``; ``required`` lists the files that must be present.
    """
    field = f"splits.{split}.files"
    if not isinstance(files, dict):
        return [
            f"{field}: must be an object (file name -> checksum) ({'missing' if files is None else _got(files)})"
        ]
    problems = []
    for fname in files:
        if fname not in expected:
            problems.append(
                f"{field}: {fname!r} is not a file of the format (known: {sorted(expected)})"
            )
    for fname in required:
        if fname not in files:
            problems.append(f"{field}: no entry for {fname}")
    for fname, entry in files.items():
        if fname not in expected:
            continue
        where = f"{field}.{fname}"
        if not isinstance(entry, dict):
            problems.append(
                f"{where}: must be an object with sha256, shape and dtype ({_got(entry)})"
            )
            continue
        shape, dtype = expected[fname]
        sha = entry.get("sha256")
        if sha is None:
            problems.append(f"{field}: no checksum for {fname}")
        elif not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            problems.append(f"{where}.sha256: must be 'sha256:' and 64 hex digits ({_got(sha)})")
        got_shape = entry.get("shape")
        if not isinstance(got_shape, list) or not all(_is_int(s) for s in got_shape):
            problems.append(f"{where}.shape: must be a list of integers ({_got(got_shape)})")
        elif tuple(got_shape) != shape:
            problems.append(f"{where}.shape: {tuple(got_shape)}, expected {shape}")
        if entry.get("dtype") != dtype:
            problems.append(f"{where}.dtype: {entry.get('dtype')!r}, expected {dtype!r}")
    return problems


class _Checker:
    """Collects ``field: problem`` lines while walking a manifest."""

    def __init__(self):
        self.problems: list[str] = []

    def add(self, field: str, problem: str) -> None:
        self.problems.append(f"{field}: {problem}")

    def obj(self, d: dict, key: str, field: str, *, required: bool = True) -> dict | None:
        v = d.get(key)
        if v is None and not required and key not in d:
            return None
        if not isinstance(v, dict):
            self.add(field, f"must be an object ({'missing' if key not in d else _got(v)})")
            return None
        return v

    def integer(self, d: dict, key: str, field: str, lo: int, hi: int | None = None) -> int | None:
        v = d.get(key)
        if not _is_int(v):
            self.add(field, f"must be an integer ({'missing' if key not in d else _got(v)})")
            return None
        if v < lo or (hi is not None and v > hi):
            self.add(field, f"must be in [{lo}, {hi if hi is not None else 'inf'}] (got {v})")
            return None
        return v

    def cost(self, d: dict, key: str, field: str, *, optional: bool = False) -> float | None:
        v = d.get(key)
        if optional and v is None:
            return None
        if not _is_number(v) or not math.isfinite(v) or v < 0:
            what = "missing" if key not in d else _got(v)
            self.add(
                field, f"must be a finite number >= 0{' or null' if optional else ''} ({what})"
            )
            return None
        return float(v)

    def name(self, d: dict, key: str, field: str) -> str | None:
        problem = name_problem(d.get(key)) if key in d else "missing"
        if problem:
            self.add(field, problem)
            return None
        return d[key]


def _units(c: _Checker, d: dict) -> dict[str, dict]:
    """Checked units by name (only the well-formed ones)."""
    units = d.get("units")
    if not isinstance(units, list) or not units:
        c.add(
            "units",
            f"must be a non-empty list of unit objects ({'missing' if 'units' not in d else _got(units)})",
        )
        return {}
    good: dict[str, dict] = {}
    for i, u in enumerate(units):
        f = f"units[{i}]"
        if not isinstance(u, dict):
            c.add(f, f"must be an object ({_got(u)})")
            continue
        name = c.name(u, "name", f"{f}.name")
        if u.get("kind") not in fmt.UNIT_KINDS:
            c.add(f"{f}.kind", f"must be one of {list(fmt.UNIT_KINDS)} ({_got(u.get('kind'))})")
        macs = c.cost(u, "macs", f"{f}.macs")
        latency = c.cost(u, "latency_s", f"{f}.latency_s", optional=True)
        if name is None:
            continue
        if name in good:
            c.add(f"{f}.name", f"{name!r}: unit names must be unique")
            continue
        good[name] = {"macs": macs, "latency_s": latency}
    return good


def _exits(c: _Checker, d: dict, units: dict[str, dict]) -> list[str] | None:
    """Check the exits; return the final exit's units (None when the exits are malformed)."""
    exits = d.get("exits")
    if not isinstance(exits, list) or not exits:
        c.add(
            "exits",
            "a cache needs a non-empty list of exits, the final one last "
            f"({'missing' if 'exits' not in d else _got(exits)})",
        )
        return None
    names: set[str] = set()
    positions: list[int] = []
    finals: list[bool] = []
    for i, e in enumerate(exits):
        f = f"exits[{i}]"
        if not isinstance(e, dict):
            c.add(f, f"must be an object ({_got(e)})")
            continue
        name = c.name(e, "name", f"{f}.name")
        if name is not None:
            if name in names:
                c.add(f"{f}.name", f"{name!r}: exit names must be unique")
            names.add(name)
        pos = c.integer(e, "position", f"{f}.position", 0)
        if pos is not None:
            if positions and pos < positions[-1]:
                c.add(
                    f"{f}.position",
                    f"{pos} after {positions[-1]}: positions must be non-decreasing in "
                    "execution order",
                )
            positions.append(pos)
        c.name(e, "head", f"{f}.head")
        final = e.get("final", False)
        if not isinstance(final, bool):
            c.add(f"{f}.final", f"must be true or false ({_got(final)})")
        finals.append(final is True)
        needs = e.get("units")
        if not isinstance(needs, list) or not all(isinstance(u, str) for u in needs):
            c.add(f"{f}.units", f"must be a list of unit names ({_got(needs)})")
        elif len(set(needs)) != len(needs):
            c.add(f"{f}.units", "names a unit twice")
        elif units and [u for u in needs if u not in units]:
            c.add(f"{f}.units", f"needs unknown units {[u for u in needs if u not in units]}")
    if finals and (not finals[-1] or any(finals[:-1])):
        c.add("exits", "exactly one exit, the last, must be marked final")
        return None
    needs = exits[-1].get("units") if isinstance(exits[-1], dict) else None
    return (
        list(needs) if isinstance(needs, list) and all(isinstance(u, str) for u in needs) else None
    )


def _splits(c: _Checker, d: dict, n_classes: int | None, k: int | None, with_files: bool) -> int:
    """Check each split (name, size, definition, file entries); return the largest sample count."""
    splits = c.obj(d, "splits", "splits")
    n_max = 0
    if splits is not None and not splits:
        c.add("splits", "a cache needs at least one split")
    for split, s in (splits or {}).items():
        problem = split_name_problem(split)
        if problem:
            c.add("splits", problem)
            continue
        if not isinstance(s, dict):
            c.add(f"splits.{split}", f"must be an object ({_got(s)})")
            continue
        n = c.integer(s, "n_samples", f"splits.{split}.n_samples", 1)
        n_max = max(n_max, n or 0)
        if not isinstance(s.get("definition", ""), str):
            c.add(f"splits.{split}.definition", f"must be a string ({_got(s['definition'])})")
        if with_files or "files" in s:
            exits = d.get("exits")
            n_exits = len(exits) if isinstance(exits, list) else 0
            if n is not None and k is not None and n_classes is not None:
                expected = {
                    f: (
                        fmt.expected_shape(
                            f, n_exits=n_exits, k=k, n_samples=n, n_classes=n_classes
                        ),
                        fmt.DTYPES[f].str,
                    )
                    for f in fmt.SPLIT_FILES + fmt.OPTIONAL_SPLIT_FILES
                }
                for p in file_entry_problems(
                    split, s.get("files"), expected, required=fmt.SPLIT_FILES
                ):
                    c.problems.append(p)
    return n_max


def manifest_problems(d: Any, *, with_files: bool = True) -> list[str]:
    """Every schema problem of a manifest dict, one ``field: problem`` line each (empty: well-formed).

    ``with_files`` also requires each split's ``files`` entries (a finished cache on disk) and a
    ``fingerprint``; a writer's manifest has neither yet.
    """
    if not isinstance(d, dict):
        return [f"malformed manifest: a JSON object expected (got {type(d).__name__})"]
    tag = d.get("format")
    if tag != fmt.format_tag():
        return [f"format: unknown format version {tag!r} (this version reads {fmt.format_tag()!r})"]
    c = _Checker()
    n_classes = c.integer(d, "n_classes", "n_classes", 1, MAX_CLASSES)
    k = c.integer(d, "k", "k", 1, n_classes)
    units = _units(c, d)
    base_units = _exits(c, d, units)
    for key in ("costs", "provenance"):
        c.obj(d, key, key, required=False)
    n_max = _splits(c, d, n_classes, k, with_files)
    if with_files:
        fp = d.get("fingerprint")
        if not isinstance(fp, str) or not _SHA256.fullmatch(fp):
            c.add("fingerprint", f"must be 'sha256:' and 64 hex digits ({_got(fp)})")
    if units and base_units is not None and all(u in units for u in base_units):
        base_field = f"exits[{len(d['exits']) - 1}].units"
        for measure, key in (("MACs", "macs"), ("latency_s", "latency_s")):
            if all(u[key] is not None for u in units.values()):
                c.problems.extend(
                    cost_problems(
                        measure,
                        {n: u[key] for n, u in units.items()},
                        base_units,
                        n_max,
                        base_field=base_field,
                    )
                )
    return c.problems
