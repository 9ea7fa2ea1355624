"""Check a cache folder: every problem one line ``file: field: problem``.

The command line is :mod:`data_cache.validate` (kept apart so ``python -m data_cache.validate`` runs
a module the package has not imported yet).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import format as fmt
from ._base import CacheMeta, meta_from_manifest
from .errors import CacheError
from .fingerprint import array_digest, cache_fingerprint

__all__ = ["validate_cache", "check_split_arrays", "describe"]

_CHUNK_ELEMENTS = 1 << 22  # values checked at a time (whole exits, at least one); bounds memory


def _exits_named(meta: CacheMeta, idx: list[int]) -> str:
    names = ", ".join(meta.exits[i].name for i in idx[:3])
    more = f" and {len(idx) - 3} more" if len(idx) > 3 else ""
    return f"at exit{'s' if len(idx) > 1 else ''} {names}{more}"


def _flag_exits(a: np.ndarray, n_exits: int, checks: dict) -> dict[str, list[int]]:
    """Exit indices where each ``checks[kind](chunk) -> (chunk_exits,) bool`` holds, chunk by chunk."""
    found: dict[str, list[int]] = {kind: [] for kind in checks}
    step = max(1, _CHUNK_ELEMENTS // max(1, a[:1].size))
    for e0 in range(0, n_exits, step):
        chunk = np.asarray(a[e0:e0 + step])
        for kind, check in checks.items():
            found[kind].extend(int(e0 + j) for j in np.flatnonzero(check(chunk)))
    return found


def _probs_checks() -> dict:
    def nonfinite(p):
        return ~np.isfinite(p).all(axis=(1, 2))

    def out_of_range(p):
        p = p.astype(np.float64)
        out = ((p < 0) | (p > 1 + 1e-6)).any(axis=(1, 2)) | (p.sum(axis=1) > 1 + 1e-3).any(axis=1)
        return out & ~nonfinite(p)

    def unsorted(p):
        return (np.diff(p, axis=1) > 0).any(axis=(1, 2))

    return {"nonfinite": nonfinite, "range": out_of_range, "order": unsorted}


def check_split_arrays(where: str, split: str, arrays: dict[str, np.ndarray], meta: CacheMeta) -> list[str]:
    """Content checks of one split's arrays (shapes already right): values, ranges, ordering.

    ``arrays`` may lack files (they were reported missing); the others are still checked. One line per
    kind of problem, naming the file, the field and the first exits affected.
    """
    problems = []
    c, n = meta.n_classes, meta.splits[split]
    base = f"{where}/{split}"
    labels = arrays.get(fmt.LABELS)
    if labels is not None and labels.size and (labels.min() < 0 or labels.max() >= c):
        problems.append(f"{base}/{fmt.LABELS}: labels: outside [0, {c}) (min {labels.min()}, max {labels.max()})")
    sidx = arrays.get(fmt.SAMPLE_INDEX)
    if sidx is not None and np.unique(sidx).size != n:
        problems.append(f"{base}/{fmt.SAMPLE_INDEX}: sample_index: values must be unique")
    lines = {
        "nonfinite": f"{base}/{fmt.TOPK_PROBS}: probabilities: NaN or inf values {{}}",
        "range": f"{base}/{fmt.TOPK_PROBS}: probabilities: outside [0, 1] or top-k summing above 1 {{}}",
        "order": f"{base}/{fmt.TOPK_PROBS}: order: top-k not sorted descending {{}}; "
                 "re-import or re-dump with the current version",
        "ids": f"{base}/{fmt.TOPK_IDS}: class ids: outside [0, {c}) {{}}",
        "logits": f"{base}/{fmt.LOGITS}: logits: NaN or inf values {{}}",
    }
    found: dict[str, list[int]] = {}
    if fmt.TOPK_PROBS in arrays:
        found.update(_flag_exits(arrays[fmt.TOPK_PROBS], meta.n_exits, _probs_checks()))
    if fmt.TOPK_IDS in arrays:
        found.update(_flag_exits(arrays[fmt.TOPK_IDS], meta.n_exits,
                                 {"ids": lambda i: ((i < 0) | (i >= c)).any(axis=(1, 2))}))
    if fmt.LOGITS in arrays:
        found.update(_flag_exits(arrays[fmt.LOGITS], meta.n_exits,
                                 {"logits": lambda z: ~np.isfinite(z).all(axis=(1, 2))}))
    problems.extend(lines[kind].format(_exits_named(meta, idx)) for kind, idx in found.items() if idx)
    return problems


def _load_split(path: Path, split: str, meta: CacheMeta, entries: dict, problems: list[str]) -> dict | None:
    """The split's well-formed arrays, memory-mapped; a problem line appended for each other file."""
    arrays = {}
    for fname in fmt.SPLIT_FILES + fmt.OPTIONAL_SPLIT_FILES:
        f = path / split / fname
        if fname in fmt.OPTIONAL_SPLIT_FILES and fname not in entries:
            continue
        if not f.exists():
            problems.append(f"{f}: missing file")
            continue
        try:
            a = np.load(f, mmap_mode="r")
        except (ValueError, OSError) as exc:
            problems.append(f"{f}: not a readable .npy file ({exc})")
            continue
        want = fmt.expected_shape(fname, n_exits=meta.n_exits, k=meta.k, n_samples=meta.splits[split],
                                  n_classes=meta.n_classes)
        if a.shape != want:
            problems.append(f"{f}: shape: {a.shape}, expected {want}")
            continue
        if a.dtype != fmt.DTYPES[fname]:
            problems.append(f"{f}: dtype: {a.dtype}, expected {fmt.DTYPES[fname]}")
            continue
        arrays[fname] = a
    return arrays


def validate_cache(path: str | Path, *, content: bool = True, checksums: bool = True) -> list[str]:
    """Every problem found in the cache at ``path``, one line each; an empty list means valid."""
    path = Path(path)
    manifest_path = path / fmt.MANIFEST
    if not path.is_dir():
        return [f"{path}: not a folder"]
    if not manifest_path.exists():
        if (path / fmt.PARTS_DIR).exists():
            return [f"{manifest_path}: missing: the cache is half-written; resume the dump (--resume)"]
        return [f"{manifest_path}: missing file (is this a cache folder?)"]
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, OSError) as exc:
        return [f"{manifest_path}: not valid JSON ({exc})"]
    try:
        meta = meta_from_manifest(manifest, source=str(manifest_path))
    except CacheError as exc:
        return exc.problems
    problems: list[str] = []
    for split in fmt.REQUIRED_SPLITS:
        if split not in meta.splits:
            problems.append(f"{manifest_path}: splits: required split {split!r} is missing")
    for split in meta.splits:
        entries = manifest["splits"][split].get("files", {})
        if not isinstance(entries, dict):
            problems.append(f"{manifest_path}: splits.{split}.files: must be an object (file name -> checksum)")
            entries = {}
        arrays = _load_split(path, split, meta, entries, problems)
        if checksums:
            for fname, a in arrays.items():
                entry = entries.get(fname)
                want = entry.get("sha256") if isinstance(entry, dict) else None
                if want is None:
                    problems.append(f"{manifest_path}: splits.{split}.files: no checksum for {fname}")
                elif array_digest(a) != want:
                    problems.append(f"{path / split / fname}: sha256: checksum mismatch (the file changed since it was "
                                    "written; re-run the dump or the import)")
        if content:
            problems.extend(check_split_arrays(str(path), split, arrays, meta))
    try:
        fingerprint = cache_fingerprint(manifest)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        problems.append(f"{manifest_path}: malformed manifest: {type(exc).__name__}: {exc}")
    else:
        if manifest.get("fingerprint") != fingerprint:
            problems.append(f"{manifest_path}: fingerprint: does not match the manifest's content")
    return problems


def describe(cache) -> str:
    """A human-readable summary: splits, exits with units and per-exit top-1 accuracy."""
    lines = [repr(cache), f"fingerprint: {cache.fingerprint}"]
    for s in cache.splits():
        lines.append(f"split {s}: {cache.n_samples(s)} samples; {cache.meta.split_definitions.get(s, '')}")
    units = {u.name: u for u in cache.units}
    base = sum(units[u].macs for u in cache.exits[-1].units) or 1.0
    lines.append(f"{'#':>3} {'exit':<40} {'pos':>4} {'head':<12} {'rel.MACs':>9}"
                 + "".join(f" {s + ' acc':>12}" for s in cache.splits()))
    for i, e in enumerate(cache.exits):
        accs = []
        for s in cache.splits():
            top1 = np.asarray(cache.topk_ids(s)[i, 0])
            accs.append(f" {float((top1 == cache.labels(s)).mean()):>12.4f}")
        macs = sum(units[u].macs for u in e.units) / base
        lines.append(f"{i:>3} {e.name:<40} {e.position:>4} {e.head:<12} {macs:>9.4f}" + "".join(accs))
    return "\n".join(lines)
