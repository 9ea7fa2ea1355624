"""Plain records of a cache (exits, compute units, metadata) and the reader interface."""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

import numpy as np

from . import format as fmt
from .errors import CacheFormatError

__all__ = ["UnitInfo", "ExitInfo", "CacheMeta", "CacheReader", "meta_from_manifest", "meta_to_manifest"]

_SPLIT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class UnitInfo:
    """A compute unit: a backbone segment, a head or an independent model (saver).

    ``macs`` is per sample (MACs = FLOPs / 2); ``latency_s`` is optional, seconds per sample.
    """

    name: str
    kind: str
    macs: float
    latency_s: float | None = None


@dataclass(frozen=True)
class ExitInfo:
    """An exit in execution order; ``units`` are every unit its output needs."""

    name: str
    position: int
    head: str
    units: tuple[str, ...]
    final: bool = False


@dataclass(frozen=True)
class CacheMeta:
    """Everything in a manifest except the per-file checksums."""

    exits: tuple[ExitInfo, ...]
    units: tuple[UnitInfo, ...]
    n_classes: int
    k: int
    splits: dict[str, int]
    split_definitions: dict[str, str] = field(default_factory=dict)
    costs: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    @property
    def n_exits(self) -> int:
        return len(self.exits)


def _check_meta(meta: CacheMeta) -> list[str]:
    problems = []
    unit_names = [u.name for u in meta.units]
    if len(set(unit_names)) != len(unit_names):
        problems.append("units: unit names must be unique")
    for u in meta.units:
        if u.kind not in fmt.UNIT_KINDS:
            problems.append(f"units: {u.name}: kind {u.kind!r} is not one of {list(fmt.UNIT_KINDS)}")
        if not np.isfinite(u.macs) or u.macs < 0:
            problems.append(f"units: {u.name}: macs must be a finite number >= 0 (got {u.macs})")
        if u.latency_s is not None and (not np.isfinite(u.latency_s) or u.latency_s < 0):
            problems.append(f"units: {u.name}: latency_s must be a finite number >= 0 (got {u.latency_s})")
    if not meta.exits:
        problems.append("exits: a cache needs at least one exit (the final one)")
    else:
        if not meta.exits[-1].final or any(e.final for e in meta.exits[:-1]):
            problems.append("exits: exactly one exit, the last, must be marked final")
        names = [e.name for e in meta.exits]
        if len(set(names)) != len(names):
            problems.append("exits: exit names must be unique")
        positions = [e.position for e in meta.exits]
        if any(b < a for a, b in zip(positions, positions[1:])):
            problems.append("exits: positions must be non-decreasing in execution order")
        known = set(unit_names)
        for e in meta.exits:
            missing = [u for u in e.units if u not in known]
            if missing:
                problems.append(f"exits: {e.name}: needs unknown units {missing}")
    if meta.n_classes < 1:
        problems.append(f"n_classes: must be >= 1 (got {meta.n_classes})")
    if meta.k < 1 or meta.k > max(meta.n_classes, 1):
        problems.append(f"k: must be in [1, n_classes={meta.n_classes}] (got {meta.k})")
    for split, n in meta.splits.items():
        if not _SPLIT_NAME.fullmatch(split):
            problems.append(f"splits: {split!r}: a split name is a folder name: letters, digits, '_', '-', '.', "
                            "not starting with '.'")
        if n < 1:
            problems.append(f"splits: {split}: n_samples must be >= 1 (got {n})")
    return problems


def meta_from_manifest(d: dict, source: str = "manifest.json") -> CacheMeta:
    """Parse and check a manifest dict; raise CacheFormatError listing every problem."""
    if not isinstance(d, dict):
        raise CacheFormatError(f"{source}: malformed manifest: a JSON object expected (got {type(d).__name__})")
    tag = d.get("format")
    if tag != fmt.format_tag():
        raise CacheFormatError(
            f"{source}: format: unknown format version {tag!r} (this version reads {fmt.format_tag()!r})")
    try:
        meta = CacheMeta(
            exits=tuple(ExitInfo(name=str(e["name"]), position=int(e["position"]), head=str(e["head"]),
                                 units=tuple(str(u) for u in e["units"]), final=bool(e.get("final", False)))
                        for e in d["exits"]),
            units=tuple(UnitInfo(name=str(u["name"]), kind=str(u["kind"]), macs=float(u["macs"]),
                                 latency_s=None if u.get("latency_s") is None else float(u["latency_s"]))
                        for u in d["units"]),
            n_classes=int(d["n_classes"]),
            k=int(d["k"]),
            splits={str(s): int(v["n_samples"]) for s, v in d["splits"].items()},
            split_definitions={str(s): str(v.get("definition", "")) for s, v in d["splits"].items()},
            costs=dict(d.get("costs", {})),
            provenance=dict(d.get("provenance", {})),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CacheFormatError(f"{source}: malformed manifest: {type(exc).__name__}: {exc}") from None
    problems = _check_meta(meta)
    if problems:
        raise CacheFormatError(f"{source}: {problems[0]}", [f"{source}: {p}" for p in problems])
    return meta


def meta_to_manifest(meta: CacheMeta) -> dict:
    """The manifest fields of ``meta`` (without per-file entries and fingerprint)."""
    return {
        "format": fmt.format_tag(),
        "n_classes": meta.n_classes,
        "k": meta.k,
        "exits": [dict(asdict(e), units=list(e.units)) for e in meta.exits],
        "units": [asdict(u) for u in meta.units],
        "costs": dict({"macs_convention": fmt.MACS_CONVENTION}, **meta.costs),
        "splits": {s: {"n_samples": n, "definition": meta.split_definitions.get(s, "")}
                   for s, n in meta.splits.items()},
        "provenance": meta.provenance,
    }


class CacheReader(ABC):
    """Read access to a cache; subclasses implement ``_array`` only.

    Arrays returned are read-only views: ``topk_probs(split)`` is ``(n_exits, k, n_samples)``.
    """

    meta: CacheMeta
    fingerprint: str

    @abstractmethod
    def _array(self, split: str, fname: str) -> np.ndarray | None:
        """The named split file (see ``format``), or None for an absent optional file."""

    # -- description -------------------------------------------------------------------------
    @property
    def exits(self) -> tuple[ExitInfo, ...]:
        return self.meta.exits

    @property
    def units(self) -> tuple[UnitInfo, ...]:
        return self.meta.units

    @property
    def n_classes(self) -> int:
        return self.meta.n_classes

    @property
    def k(self) -> int:
        return self.meta.k

    def splits(self) -> list[str]:
        return list(self.meta.splits)

    def n_samples(self, split: str) -> int:
        return self.meta.splits[self._check_split(split)]

    def exit_index(self, name: str) -> int:
        for i, e in enumerate(self.meta.exits):
            if e.name == name:
                return i
        raise KeyError(f"exit {name!r} is not in this cache; it has {[e.name for e in self.meta.exits]}")

    # -- arrays ------------------------------------------------------------------------------
    def _check_split(self, split: str) -> str:
        if split not in self.meta.splits:
            raise KeyError(f"split {split!r} is not in this cache; it has {list(self.meta.splits)}")
        return split

    def labels(self, split: str) -> np.ndarray:
        return self._array(self._check_split(split), fmt.LABELS)

    def sample_index(self, split: str) -> np.ndarray:
        return self._array(self._check_split(split), fmt.SAMPLE_INDEX)

    def topk_ids(self, split: str) -> np.ndarray:
        return self._array(self._check_split(split), fmt.TOPK_IDS)

    def topk_probs(self, split: str) -> np.ndarray:
        return self._array(self._check_split(split), fmt.TOPK_PROBS)

    def logits(self, split: str) -> np.ndarray | None:
        return self._array(self._check_split(split), fmt.LOGITS)

    def has_logits(self, split: str) -> bool:
        return self.logits(split) is not None

    def __repr__(self) -> str:
        splits = ", ".join(f"{s}={n}" for s, n in self.meta.splits.items())
        return f"{type(self).__name__}(exits={self.meta.n_exits}, k={self.k}, n_classes={self.n_classes}, {splits})"
