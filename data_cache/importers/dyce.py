"""DyCE / TinySaver record files -> a cache (``docs/cache-format.md``, "DyCE import").

One ``.npz`` per split: ``label`` (N, 1) (or (N,)), ``preds`` (R, N, k) class ids, ``confs`` (R, N, k)
descending probabilities, optionally ``meta_info`` (a pickled object: never read, so no file needs
``allow_pickle``) and ``sample_index`` (N,) (not in their format; used when present, else 0..N-1).
Rows are position-major, head-type-minor: row ``p * T + t`` is head type ``t`` at position ``p`` for
the P-1 early positions, the last row is the model's own output, so R = (P-1)*T + 1.

Costs (their ``macs_info`` JSON) become compute units with the same accounting: segment ``p`` costs
``cum[p] - cum[p-1]`` where ``cum = backbone.macs (+ shared.macs)``; head unit ``pos{p}/{head}``
costs ``head[t].macs[p]``; an exit at position p needs segments 0..p and its head unit; the final
exit needs every segment. A TinySaver pair (P=2, T=1, nothing computed before position 0) maps to a
``saver`` unit (kind ``saver``, ``head[0].macs[0]``) for the saver's exit and a ``base`` unit for
the final exit.
"""

from __future__ import annotations

import platform
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._base import CacheMeta, ExitInfo, UnitInfo
from ..errors import CacheInputError, CacheWarning
from ..fingerprint import file_digest
from ..reader import MemmapCache
from ..writer import create_cache
from . import register_importer
from ._dyce_files import DyceRecords, MacsInfo, read_macs_info, read_records

__all__ = [
    "MacsInfo",
    "DyceRecords",
    "read_macs_info",
    "read_records",
    "dyce_meta",
    "import_dyce",
    "LAYOUTS",
]

LAYOUTS = ("auto", "dyce", "tinysaver")
FINAL_HEAD = "final"  # head name of the final exit (the model's own output)
_CHUNK_ELEMENTS = 1 << 22  # values checked at a time (whole rows, at least one): bounds memory


def _resolve_layout(macs: MacsInfo, layout: str) -> str:
    if layout not in LAYOUTS:
        raise CacheInputError(f"layout: must be one of {list(LAYOUTS)} (got {layout!r})")
    pair = macs.n_positions == 2 and macs.n_head_types == 1 and macs.cumulative[0] == 0
    if layout == "tinysaver" and not pair:
        raise CacheInputError(
            f"{macs.source}: a TinySaver pair needs P=2 positions, T=1 head and backbone.macs[0] (+ shared) = 0 "
            f"(got P={macs.n_positions}, T={macs.n_head_types}, backbone.macs[0]={macs.cumulative[0]:g})"
        )
    if layout == "auto":
        return "tinysaver" if pair else "dyce"
    return layout


def dyce_meta(
    macs: MacsInfo,
    *,
    n_classes: int,
    k: int,
    splits: dict[str, int],
    layout: str = "auto",
    split_definitions: dict[str, str] | None = None,
    costs: dict | None = None,
    provenance: dict | None = None,
) -> CacheMeta:
    """Exits and compute units for records described by ``macs`` (row order = exit order)."""
    layout = _resolve_layout(macs, layout)
    n_pos, final_pos = macs.n_positions, macs.n_positions - 1
    final_name = f"pos{final_pos}/{FINAL_HEAD}"
    units: tuple[UnitInfo, ...]
    exits: tuple[ExitInfo, ...]
    if layout == "tinysaver":
        head = macs.head_names[0]
        units = (
            UnitInfo("saver", "saver", float(macs.head_macs[0, 0])),
            UnitInfo("base", "segment", float(macs.cumulative[1])),
        )
        exits = (
            ExitInfo(f"pos0/{head}", 0, head, ("saver",)),
            ExitInfo(final_name, final_pos, FINAL_HEAD, ("base",), final=True),
        )
    else:
        seg = np.diff(macs.cumulative, prepend=0.0)
        segments = [f"segment{p}" for p in range(n_pos)]
        unit_list = [UnitInfo(s, "segment", float(m)) for s, m in zip(segments, seg, strict=True)]
        exit_list = []
        for p in range(final_pos):
            for t, head in enumerate(macs.head_names):
                name = f"pos{p}/{head}"
                unit_list.append(UnitInfo(name, "head", float(macs.head_macs[t, p])))
                exit_list.append(ExitInfo(name, p, head, tuple(segments[: p + 1]) + (name,)))
        exit_list.append(ExitInfo(final_name, final_pos, FINAL_HEAD, tuple(segments), final=True))
        units, exits = tuple(unit_list), tuple(exit_list)
    return CacheMeta(
        exits=exits,
        units=units,
        n_classes=int(n_classes),
        k=int(k),
        splits=dict(splits),
        split_definitions=dict(split_definitions or {}),
        costs=dict(costs or {}),
        provenance=dict(provenance or {}, layout=layout),
    )


def _rows_named(rows: list[int], exits: tuple[ExitInfo, ...]) -> str:
    shown = ", ".join(f"{r} ({exits[r].name})" for r in rows[:3])
    return f"row{'s' if len(rows) > 1 else ''} {shown}" + (
        f" and {len(rows) - 3} more" if len(rows) > 3 else ""
    )


def _check_content(rec: DyceRecords, exits: tuple[ExitInfo, ...], n_classes: int) -> list[str]:
    """Value checks of one split (shapes already agree): labels, class ids, probabilities, order."""
    src, problems = rec.source, []
    if rec.labels.min() < 0 or rec.labels.max() >= n_classes:
        problems.append(
            f"{src}: label: outside [0, {n_classes}) (min {rec.labels.min()}, max {rec.labels.max()})"
        )
    found: dict[str, list[int]] = {"nonfinite": [], "range": [], "order": [], "ids": []}
    step = max(1, _CHUNK_ELEMENTS // max(1, rec.confs[:1].size))
    for r0 in range(0, rec.shape[0], step):
        c = np.asarray(rec.confs[r0 : r0 + step], dtype=np.float64)  # (rows, N, k)
        i = rec.preds[r0 : r0 + step]
        nonfinite = ~np.isfinite(c).all(axis=(1, 2))
        out = ((c < 0) | (c > 1 + 1e-6)).any(axis=(1, 2)) | (c.sum(axis=2) > 1 + 1e-3).any(axis=1)
        flags = {
            "nonfinite": nonfinite,
            "range": out & ~nonfinite,
            "order": (np.diff(c, axis=2) > 0).any(axis=(1, 2)),
            "ids": ((i < 0) | (i >= n_classes)).any(axis=(1, 2)),
        }
        for kind, f in flags.items():
            found[kind].extend(int(r0 + j) for j in np.flatnonzero(f))
    lines = {
        "nonfinite": "confs: NaN or inf values",
        "range": "confs: outside [0, 1] or top-k summing above 1",
        "order": "confs: not sorted descending along k (most probable first)",
        "ids": f"preds: class ids outside [0, {n_classes})",
    }
    problems.extend(
        f"{src}: {lines[kind]} at {_rows_named(rows, exits)}"
        for kind, rows in found.items()
        if rows
    )
    return problems


def _software() -> dict:
    from importlib import metadata

    try:
        own = metadata.version("exitsearch")
    except metadata.PackageNotFoundError:
        own = None
    return {"exitsearch": own, "numpy": np.__version__, "python": platform.python_version()}


def _read_splits(search: str | Path, holdout: str | Path) -> dict[str, DyceRecords]:
    """Both splits' records; the problems of both files raised together."""
    recs, problems = {}, []
    for split, p in (("search", search), ("holdout", holdout)):
        try:
            recs[split] = read_records(p)
        except CacheInputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise CacheInputError(problems[0], problems)
    return recs


def _check_rows(macs: MacsInfo, recs: dict[str, DyceRecords]) -> int:
    """Each split has the R rows ``macs`` implies and both the same k, which is returned."""
    problems = []
    P, T, R = macs.n_positions, macs.n_head_types, macs.n_rows
    for rec in recs.values():
        if rec.shape[0] != R:
            hint = (
                f"the records fit P={(rec.shape[0] - 1) // T + 1} positions"
                if (rec.shape[0] - 1) % T == 0
                else f"R-1 is not a multiple of T={T}"
            )
            problems.append(
                f"{rec.source}: R: preds has R={rec.shape[0]} rows, but {macs.source} gives "
                f"P={P} positions and T={T} head types, so (P-1)*T+1 = {R} rows ({hint})"
            )
    k = recs["search"].shape[2]
    if recs["holdout"].shape[2] != k:
        problems.append(
            f"{recs['holdout'].source}: k: preds has k={recs['holdout'].shape[2]}, "
            f"{recs['search'].source} has k={k}; both splits need the same k"
        )
    if problems:
        raise CacheInputError(problems[0], problems)
    return k


def _n_classes(recs: dict[str, DyceRecords], k: int, n_classes: int | None) -> tuple[int, str]:
    """The class count (given, or the largest class id seen + 1) and where it came from."""
    seen = max(max(int(r.labels.max()), int(r.preds.max())) for r in recs.values()) + 1
    if n_classes is None:
        return max(seen, k), "inferred: the largest class id in the records + 1"
    if int(n_classes) < k:
        raise CacheInputError(f"n_classes: {int(n_classes)} is smaller than k={k}")
    return int(n_classes), "given"


def _provenance(
    macs: MacsInfo, macs_info: str | Path, recs: dict[str, DyceRecords], n_classes_from: str
) -> dict:
    """The cache's provenance: the input files with their digests; warns when both splits match."""
    source: dict = {
        "format": "dyce-records",
        "macs_info": {"file": str(macs_info), "sha256": file_digest(macs_info)},
    }
    digests = {s: file_digest(r.source) for s, r in recs.items()}
    if digests["search"] == digests["holdout"]:
        warnings.warn(
            CacheWarning(
                f"{recs['holdout'].source}: holdout: the same records as the search split "
                f"({recs['search'].source}); holdout figures will not be independent of the search"
            ),
            stacklevel=3,  # the caller of import_dyce
        )
    for s, r in recs.items():
        source[s] = {
            "file": str(r.source),
            "sha256": digests[s],
            "sample_index": "from the record file"
            if r.sample_index is not None
            else "row order 0..N-1",
            "meta_info": "present, not read (pickled)" if r.has_meta_info else "absent",
        }
    return {
        "model": {"name": macs.backbone, "fingerprint": None},
        "source": source,
        "n_classes": n_classes_from,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": _software(),
    }


def _write(
    out: str | Path,
    meta: CacheMeta,
    recs: dict[str, DyceRecords],
    *,
    overwrite: bool,
    chunk: int,
) -> MemmapCache:
    """Write the records into a new cache at ``out``, ``chunk`` samples at a time."""
    writer = create_cache(out, meta, overwrite=overwrite)
    for split, rec in recs.items():
        n = meta.splits[split]
        sidx = rec.sample_index if rec.sample_index is not None else np.arange(n)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            writer.write(
                split,
                a,
                labels=rec.labels[a:b],
                sample_index=sidx[a:b],
                topk_ids=np.transpose(rec.preds[:, a:b], (1, 0, 2)),
                topk_probs=np.transpose(rec.confs[:, a:b], (1, 0, 2)),
            )
    return writer.finalize()


@register_importer("dyce")
def import_dyce(
    out: str | Path,
    *,
    search: str | Path,
    holdout: str | Path,
    macs_info: str | Path,
    n_classes: int | None = None,
    layout: str = "auto",
    overwrite: bool = False,
    provenance: dict | None = None,
    chunk: int = 1 << 15,
) -> MemmapCache:
    """Import DyCE/TinySaver records (one ``.npz`` per split) and their macs_info into a cache at ``out``.

    ``n_classes`` defaults to the largest class id seen (labels and predictions) + 1. ``layout``:
    ``"auto"`` (a TinySaver pair when P=2, T=1 and nothing runs before position 0), ``"dyce"`` or
    ``"tinysaver"``. Everything is checked before ``out`` is touched; every inconsistency is one line
    of the raised :class:`CacheInputError`. Returns the written cache, validated.
    """
    macs = read_macs_info(macs_info)
    layout = _resolve_layout(macs, layout)
    recs = _read_splits(search, holdout)
    k = _check_rows(macs, recs)
    n_classes, n_classes_from = _n_classes(recs, k, n_classes)
    costs: dict[str, str | float] = {"macs_counter": f"DyCE macs_info {Path(macs_info).name}"}
    if macs.ori_macs is not None:
        costs["dyce_ori_macs"] = macs.ori_macs
    prov = _provenance(macs, macs_info, recs, n_classes_from)
    prov.update(provenance or {})
    meta = dyce_meta(
        macs,
        n_classes=n_classes,
        k=k,
        splits={s: r.shape[1] for s, r in recs.items()},
        layout=layout,
        costs=costs,
        provenance=prov,
        split_definitions={s: f"DyCE records {Path(r.source).name}" for s, r in recs.items()},
    )
    problems = [p for rec in recs.values() for p in _check_content(rec, meta.exits, n_classes)]
    if problems:
        raise CacheInputError(problems[0], problems)
    return _write(out, meta, recs, overwrite=overwrite, chunk=chunk)
