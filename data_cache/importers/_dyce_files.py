"""Reading DyCE / TinySaver input files: the ``macs_info`` JSON and one split's ``.npz`` records.

Every problem found is one line of the raised :class:`CacheInputError` (``docs/cache-format.md``,
"DyCE import"); record files are never unpickled.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CacheInputError
from ..integrity import has_duplicates

__all__ = ["MacsInfo", "DyceRecords", "read_macs_info", "read_records"]


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


def _load_json(path: Path) -> object:
    """The parsed JSON of ``path``; an unreadable or invalid file raises one line."""
    src = str(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CacheInputError(f"{src}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CacheInputError(f"{src}: cannot read ({exc})") from None
    except (ValueError, RecursionError) as exc:
        raise CacheInputError(f"{src}: not valid JSON ({exc})") from None


def _head_entries(
    heads: object, src: str, problems: list[str]
) -> tuple[list[str], list[np.ndarray | None]]:
    """Names and MACs of the ``head`` list (one entry per head type); problems added as lines."""
    names: list[str] = []
    hmacs: list[np.ndarray | None] = []
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
    return names, hmacs


def _check_positions(
    src: str,
    n_pos: int,
    names: list[str],
    hmacs: list[np.ndarray | None],
    smacs: np.ndarray | None,
    problems: list[str],
) -> None:
    """Every MACs list has one entry per position (``backbone.macs`` gives ``n_pos``)."""
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


def _cumulative(src: str, bmacs: np.ndarray, smacs: np.ndarray | None) -> np.ndarray:
    """backbone.macs (+ shared.macs), refused unless non-decreasing."""
    cum = bmacs + (smacs if smacs is not None else 0.0)
    drop = np.flatnonzero(np.diff(cum) < 0)
    if drop.size:
        p = int(drop[0]) + 1
        what = "backbone.macs + shared.macs" if smacs is not None else "backbone.macs"
        raise CacheInputError(
            f"{src}: backbone.macs: must be cumulative ({what} non-decreasing); "
            f"position {p} has {cum[p]:g} < {cum[p - 1]:g} at position {p - 1}"
        )
    return cum


def read_macs_info(path: str | Path) -> MacsInfo:
    """Parse and check a macs_info JSON file; raise CacheInputError listing every problem."""
    path = Path(path)
    src = str(path)
    d = _load_json(path)
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
    names, hmacs = _head_entries(heads, src, problems)
    smacs = None
    if shared is not None:
        if not isinstance(shared, dict) or "macs" not in shared:
            problems.append(f"{src}: shared: must be an object with 'macs'")
        else:
            smacs = _numbers(shared["macs"], f"{src}: shared.macs", problems)
    if bmacs is not None:
        _check_positions(src, len(bmacs), names, hmacs, smacs, problems)
    if (
        problems or bmacs is None or not isinstance(backbone, dict)
    ):  # no problem means a backbone with macs
        raise CacheInputError(problems[0], problems)
    ori = backbone.get("ori_macs")
    ori = float(ori) if isinstance(ori, (int, float)) and not isinstance(ori, bool) else None
    return MacsInfo(
        source=src,
        backbone=str(backbone.get("name", "")),
        head_names=tuple(names),
        cumulative=_cumulative(src, bmacs, smacs),
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


_KINDS = {  # dtype kinds accepted per key, and the dtype named when another is found
    "label": ("iu", "int16"),
    "preds": ("iu", "int16"),
    "confs": ("f", "float32"),
    "sample_index": ("iu", "int64"),
}


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """The ``.npz`` at ``path``, opened without pickle; anything else raises one line."""
    src = str(path)
    if not path.is_file():
        raise CacheInputError(f"{src}: no such file")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CacheInputError(f"{src}: not a NumPy .npz file ({exc})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise CacheInputError(f"{src}: not a NumPy .npz file (it holds a single array)")
    return z


def _read_arrays(
    z: np.lib.npyio.NpzFile, src: str, problems: list[str]
) -> tuple[dict[str, np.ndarray], set[str]]:
    """The record arrays that read cleanly, and every key of the file; problems added as lines."""
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
    return arrays, keys


def _check_agreement(
    src: str,
    preds: np.ndarray,
    confs: np.ndarray,
    labels: np.ndarray,
    sidx: np.ndarray | None,
    problems: list[str],
) -> None:
    """R, N and k agree across the arrays; sample indices unique; problems added as lines."""
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


def read_records(path: str | Path) -> DyceRecords:
    """Load one split's record file (never unpickling); check keys, shapes and dtypes."""
    path = Path(path)
    src = str(path)
    z = _open_npz(path)
    problems: list[str] = []
    arrays, keys = _read_arrays(z, src, problems)
    for key, a in arrays.items():
        if a.dtype.kind not in _KINDS[key][0]:
            problems.append(f"{src}: {key}: dtype {a.dtype}, expected {_KINDS[key][1]}")
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
    _check_agreement(src, preds, confs, labels, sidx, problems)
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
