"""Plain records of a cache (exits, compute units, metadata) and the reader interface."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import format as fmt
from .errors import CacheFormatError, CacheIncompleteError
from .schema import manifest_problems

__all__ = [
    "UnitInfo",
    "ExitInfo",
    "CacheMeta",
    "CacheReader",
    "read_manifest",
    "meta_from_manifest",
    "meta_to_manifest",
    "check_meta",
]


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


def read_manifest(path: Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of the cache folder ``path`` (not yet checked against the schema).

    A missing manifest raises :class:`CacheIncompleteError` when ``.parts/`` says a dump was interrupted,
    else :class:`CacheFormatError`; so does a manifest that cannot be read or parsed.
    """
    manifest_path = path / fmt.MANIFEST
    try:
        exists = manifest_path.exists()
    except OSError as exc:  # a name too long for the file system (ENAMETOOLONG)
        raise CacheFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not exists:
        if (path / fmt.PARTS_DIR).exists():
            raise CacheIncompleteError(
                f"{manifest_path}: missing: the cache is half-written; resume the dump (--resume)"
            )
        raise CacheFormatError(f"{manifest_path}: missing file (is this a cache folder?)")
    try:
        doc = json.loads(manifest_path.read_text())
    except OSError as exc:  # a folder, a file it may not read
        raise CacheFormatError(f"{manifest_path}: cannot read ({exc.strerror or exc})") from None
    except (
        ValueError,
        RecursionError,
    ) as exc:  # bytes that are not UTF-8, bad JSON; RecursionError: absurd nesting
        raise CacheFormatError(f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CacheFormatError(
            f"{manifest_path}: malformed manifest: a JSON object expected "
            f"(got {type(doc).__name__})"
        )
    return doc


def meta_from_manifest(
    d: dict, source: str = "manifest.json", *, with_files: bool = False
) -> CacheMeta:
    """Check a manifest dict against the schema (``schema.py``) and parse it; raise CacheFormatError
    listing every problem as ``source: field: problem``. ``with_files``: a finished cache on disk (file
    entries and fingerprint required)."""
    problems = manifest_problems(d, with_files=with_files)
    if problems:
        raise CacheFormatError(f"{source}: {problems[0]}", [f"{source}: {p}" for p in problems])
    return CacheMeta(
        exits=tuple(
            ExitInfo(
                name=e["name"],
                position=e["position"],
                head=e["head"],
                units=tuple(e["units"]),
                final=e.get("final", False),
            )
            for e in d["exits"]
        ),
        units=tuple(
            UnitInfo(
                name=u["name"],
                kind=u["kind"],
                macs=float(u["macs"]),
                latency_s=None if u.get("latency_s") is None else float(u["latency_s"]),
            )
            for u in d["units"]
        ),
        n_classes=d["n_classes"],
        k=d["k"],
        splits={s: v["n_samples"] for s, v in d["splits"].items()},
        split_definitions={s: v.get("definition", "") for s, v in d["splits"].items()},
        costs=dict(d.get("costs") or {}),
        provenance=dict(d.get("provenance") or {}),
    )


def check_meta(meta: CacheMeta, source: str) -> dict:
    """The manifest fields of ``meta`` as plain JSON, checked like a manifest read from disk (no files yet)."""
    try:
        manifest = json.loads(json.dumps(meta_to_manifest(meta), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise CacheFormatError(
            f"{source}: meta: every field must hold plain JSON values (no numpy scalars, "
            f"NaN or inf) ({exc})"
        ) from None
    meta_from_manifest(manifest, source, with_files=False)
    return manifest


def meta_to_manifest(meta: CacheMeta) -> dict:
    """The manifest fields of ``meta`` (without per-file entries and fingerprint)."""
    return {
        "format": fmt.format_tag(),
        "n_classes": meta.n_classes,
        "k": meta.k,
        "exits": [dict(asdict(e), units=list(e.units)) for e in meta.exits],
        "units": [asdict(u) for u in meta.units],
        "costs": dict({"macs_convention": fmt.MACS_CONVENTION}, **meta.costs),
        "splits": {
            s: {"n_samples": n, "definition": meta.split_definitions.get(s, "")}
            for s, n in meta.splits.items()
        },
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
        raise KeyError(
            f"exit {name!r} is not in this cache; it has {[e.name for e in self.meta.exits]}"
        )

    # -- arrays ------------------------------------------------------------------------------
    def _check_split(self, split: str) -> str:
        if split not in self.meta.splits:
            raise KeyError(f"split {split!r} is not in this cache; it has {list(self.meta.splits)}")
        return split

    def _required(self, split: str, fname: str) -> np.ndarray:
        """A file every split has (its absence is a schema problem, refused before a reader exists)."""
        a = self._array(self._check_split(split), fname)
        if a is None:
            raise CacheFormatError(f"{split}/{fname}: missing")
        return a

    def labels(self, split: str) -> np.ndarray:
        return self._required(split, fmt.LABELS)

    def sample_index(self, split: str) -> np.ndarray:
        return self._required(split, fmt.SAMPLE_INDEX)

    def topk_ids(self, split: str) -> np.ndarray:
        return self._required(split, fmt.TOPK_IDS)

    def topk_probs(self, split: str) -> np.ndarray:
        return self._required(split, fmt.TOPK_PROBS)

    def logits(self, split: str) -> np.ndarray | None:
        return self._array(self._check_split(split), fmt.LOGITS)

    def has_logits(self, split: str) -> bool:
        return self.logits(split) is not None

    def __repr__(self) -> str:
        splits = ", ".join(f"{s}={n}" for s, n in self.meta.splits.items())
        return f"{type(self).__name__}(exits={self.meta.n_exits}, k={self.k}, n_classes={self.n_classes}, {splits})"
