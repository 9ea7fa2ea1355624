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

import json
import platform
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._base import CacheMeta, ExitInfo, UnitInfo
from ..errors import CacheInputError, CacheWarning
from ..fingerprint import file_digest
from ..integrity import has_duplicates
from ..reader import MemmapCache
from ..writer import create_cache
from . import register_importer

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


@dataclass(frozen=True)
class MacsInfo:
    """A parsed macs_info file. ``cumulative`` ``(P,)`` = backbone.macs (+ shared.macs);
    ``head_macs`` ``(T, P)``."""

    source: str
    backbone: str
    head_names: tuple[str, ...]
    cumulative: np.ndarray
    head_macs: np.ndarray
    ori_macs: float | None

    @property
    def n_positions(self) -> int:
        return int(self.cumulative.shape[0])

    @property
    def n_head_types(self) -> int:
        return len(self.head_names)

    @property
    def n_rows(self) -> int:
        """R = (P-1)*T + 1: the rows a record file must hold."""
        return (self.n_positions - 1) * self.n_head_types + 1


@dataclass(frozen=True)
class DyceRecords:
    """One split's records: ``labels`` (N,), ``preds``/``confs`` (R, N, k), ``sample_index`` (N,) or None."""

    source: str
    labels: np.ndarray
    preds: np.ndarray
    confs: np.ndarray
    sample_index: np.ndarray | None
    has_meta_info: bool

    @property
    def shape(self) -> tuple[int, int, int]:
        """(R, N, k)."""
        return tuple(self.preds.shape)


def _numbers(value, where: str, problems: list[str]) -> np.ndarray | None:
    """A list of finite numbers >= 0 as float64, else a problem line."""
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        problems.append(f"{where}: must be a non-empty list of numbers (got {str(value)[:60]})")
        return None
    a = np.asarray(value, dtype=np.float64)
    if not np.isfinite(a).all() or (a < 0).any():
        problems.append(f"{where}: every entry must be a finite number >= 0 (got {value})")
        return None
    return a


def read_macs_info(path: str | Path) -> MacsInfo:
    """Parse and check a macs_info JSON file; raise CacheInputError listing every problem."""
    path = Path(path)
    src = str(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise CacheInputError(f"{src}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CacheInputError(f"{src}: cannot read ({exc})") from None
    except (ValueError, RecursionError) as exc:
        raise CacheInputError(f"{src}: not valid JSON ({exc})") from None
    problems: list[str] = []
    if not isinstance(d, dict):
        raise CacheInputError(
            f"{src}: a JSON object with 'head' and 'backbone' expected (got {type(d).__name__})"
        )
    heads, backbone, shared = d.get("head"), d.get("backbone"), d.get("shared")
    if not isinstance(backbone, dict) or "macs" not in backbone:
        problems.append(f"{src}: backbone: missing, or without 'macs'")
        bmacs = None
    else:
        bmacs = _numbers(backbone["macs"], f"{src}: backbone.macs", problems)
    names, hmacs = [], []
    if not isinstance(heads, list) or not heads:
        problems.append(
            f"{src}: head: must be a non-empty list of {{'name', 'macs'}} objects, one per head type"
        )
        heads = []
    for t, h in enumerate(heads):
        if (
            not isinstance(h, dict)
            or not isinstance(h.get("name"), str)
            or not h["name"]
            or "macs" not in h
        ):
            problems.append(f"{src}: head[{t}]: needs a non-empty 'name' and 'macs'")
            continue
        names.append(h["name"])
        hmacs.append(_numbers(h["macs"], f"{src}: head[{t}] ({h['name']}).macs", problems))
    if len(set(names)) != len(names):
        problems.append(f"{src}: head: names must be unique (got {names})")
    smacs = None
    if shared is not None:
        if not isinstance(shared, dict) or "macs" not in shared:
            problems.append(f"{src}: shared: must be an object with 'macs'")
        else:
            smacs = _numbers(shared["macs"], f"{src}: shared.macs", problems)
    if bmacs is not None:
        n_pos = len(bmacs)
        for t, (name, m) in enumerate(zip(names, hmacs, strict=True)):
            if m is not None and len(m) != n_pos:
                problems.append(
                    f"{src}: P: head[{t}] ({name}).macs has {len(m)} entries, backbone.macs has "
                    f"{n_pos} (one per position, the final one included)"
                )
        if smacs is not None and len(smacs) != n_pos:
            problems.append(
                f"{src}: P: shared.macs has {len(smacs)} entries, backbone.macs has {n_pos}"
            )
    if (
        problems or bmacs is None or not isinstance(backbone, dict)
    ):  # no problem means a backbone with macs
        raise CacheInputError(problems[0], problems)
    cum = bmacs + (smacs if smacs is not None else 0.0)
    drop = np.flatnonzero(np.diff(cum) < 0)
    if drop.size:
        p = int(drop[0]) + 1
        what = "backbone.macs + shared.macs" if smacs is not None else "backbone.macs"
        raise CacheInputError(
            f"{src}: backbone.macs: must be cumulative ({what} non-decreasing); "
            f"position {p} has {cum[p]:g} < {cum[p - 1]:g} at position {p - 1}"
        )
    ori = backbone.get("ori_macs")
    ori = float(ori) if isinstance(ori, (int, float)) and not isinstance(ori, bool) else None
    return MacsInfo(
        source=src,
        backbone=str(backbone.get("name", "")),
        head_names=tuple(names),
        cumulative=cum,
        head_macs=np.stack([m for m in hmacs if m is not None]),
        ori_macs=ori,
    )


def _column(
    a: np.ndarray | None, where: str, expected: str, problems: list[str]
) -> np.ndarray | None:
    """An ``(N,)`` or ``(N, 1)`` array as ``(N,)``; another shape adds a problem line."""
    if a is None or a.ndim == 1:
        return a
    if a.ndim == 2 and a.shape[1] == 1:
        return a[:, 0]
    problems.append(f"{where}: shape {a.shape}, expected {expected}")
    return a


def read_records(path: str | Path) -> DyceRecords:
    """Load one split's record file (never unpickling); check keys, shapes and dtypes."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise CacheInputError(f"{src}: no such file")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CacheInputError(f"{src}: not a NumPy .npz file ({exc})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise CacheInputError(f"{src}: not a NumPy .npz file (it holds a single array)")
    problems: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    with z:
        keys = set(z.files)
        for key in ("label", "preds", "confs", "sample_index"):
            if key not in keys:
                if key != "sample_index":
                    problems.append(f"{src}: {key}: missing (the file holds {sorted(keys)})")
                continue
            try:
                value = z[key]
            except ValueError as exc:
                problems.append(
                    f"{src}: {key}: stored as Python objects; expected a numeric array"
                    if "pickle" in str(exc)
                    else f"{src}: {key}: not a readable array ({exc})"
                )
                continue
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                problems.append(f"{src}: {key}: damaged or truncated ({type(exc).__name__}: {exc})")
                continue
            if not isinstance(value, np.ndarray):
                problems.append(f"{src}: {key}: not a .npy array inside the .npz")
                continue
            arrays[key] = value
    kinds = {
        "label": ("iu", "int16"),
        "preds": ("iu", "int16"),
        "confs": ("f", "float32"),
        "sample_index": ("iu", "int64"),
    }
    for key, a in arrays.items():
        if a.dtype.kind not in kinds[key][0]:
            problems.append(f"{src}: {key}: dtype {a.dtype}, expected {kinds[key][1]}")
    preds, confs = arrays.get("preds"), arrays.get("confs")
    for key, rec in (("preds", preds), ("confs", confs)):
        if rec is not None and rec.ndim != 3:
            problems.append(f"{src}: {key}: shape {rec.shape}, expected (R, N, k)")
    labels = _column(arrays.get("label"), f"{src}: label", "(N, 1)", problems)
    sidx = _column(arrays.get("sample_index"), f"{src}: sample_index", "(N,)", problems)
    if (
        problems or preds is None or confs is None or labels is None
    ):  # no problem means all three are there
        raise CacheInputError(problems[0], problems)
    if preds.shape[:2] != confs.shape[:2]:
        problems.append(
            f"{src}: R/N: preds has (R, N) = {preds.shape[:2]}, confs has {confs.shape[:2]}"
        )
    if preds.shape[2] != confs.shape[2]:
        problems.append(f"{src}: k: preds has k={preds.shape[2]}, confs has k={confs.shape[2]}")
    if labels.shape[0] != preds.shape[1]:
        problems.append(
            f"{src}: N: label has N={labels.shape[0]} samples, preds has N={preds.shape[1]}"
        )
    if sidx is not None:
        if sidx.shape[0] != labels.shape[0]:
            problems.append(
                f"{src}: N: sample_index has {sidx.shape[0]} entries, label has N={labels.shape[0]}"
            )
        elif has_duplicates(sidx):
            problems.append(f"{src}: sample_index: values must be unique")
    if min(preds.shape) < 1:
        problems.append(f"{src}: preds: shape {preds.shape}: R, N and k must all be >= 1")
    if problems:
        raise CacheInputError(problems[0], problems)
    return DyceRecords(
        source=src,
        labels=labels,
        preds=preds,
        confs=confs,
        sample_index=sidx,
        has_meta_info="meta_info" in keys,
    )


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
    recs, problems = {}, []
    for split, p in (("search", search), ("holdout", holdout)):
        try:
            recs[split] = read_records(p)
        except CacheInputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise CacheInputError(problems[0], problems)
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
    seen = max(max(int(r.labels.max()), int(r.preds.max())) for r in recs.values()) + 1
    if n_classes is None:
        n_classes, n_classes_from = (
            max(seen, k),
            "inferred: the largest class id in the records + 1",
        )
    else:
        n_classes, n_classes_from = int(n_classes), "given"
        if n_classes < k:
            raise CacheInputError(f"n_classes: {n_classes} is smaller than k={k}")
    sizes = {s: r.shape[1] for s, r in recs.items()}
    costs: dict[str, str | float] = {"macs_counter": f"DyCE macs_info {Path(macs_info).name}"}
    if macs.ori_macs is not None:
        costs["dyce_ori_macs"] = macs.ori_macs
    source = {
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
            stacklevel=2,
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
    prov = {
        "model": {"name": macs.backbone, "fingerprint": None},
        "source": source,
        "n_classes": n_classes_from,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": _software(),
    }
    prov.update(provenance or {})
    meta = dyce_meta(
        macs,
        n_classes=n_classes,
        k=k,
        splits=sizes,
        layout=layout,
        costs=costs,
        provenance=prov,
        split_definitions={s: f"DyCE records {Path(r.source).name}" for s, r in recs.items()},
    )
    for rec in recs.values():
        problems.extend(_check_content(rec, meta.exits, n_classes))
    if problems:
        raise CacheInputError(problems[0], problems)
    writer = create_cache(out, meta, overwrite=overwrite)
    for split, rec in recs.items():
        n = sizes[split]
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
