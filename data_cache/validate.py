"""Check a cache folder; ``python -m data_cache.validate DIR`` prints what it holds and every problem.

Each problem is one line ``file: field: problem``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import format as fmt
from ._base import CacheMeta, meta_from_manifest
from .errors import CacheError
from .fingerprint import array_digest, cache_fingerprint

__all__ = ["validate_cache", "check_split_arrays", "main"]

_EXIT_CHUNK = 8  # exits checked at a time, bounds memory on big caches


def _exits_named(meta: CacheMeta, idx: list[int]) -> str:
    names = [meta.exits[i].name for i in idx[:3]]
    return f"at exit{'s' if len(idx) > 1 else ''} {', '.join(names)}" + (f" and {len(idx) - 3} more" if len(idx) > 3 else "")


def check_split_arrays(where: str, split: str, arrays: dict[str, np.ndarray], meta: CacheMeta) -> list[str]:
    """Content checks of one split's arrays (shapes already right): values, ranges, ordering.

    One line per kind of problem, naming the file, the field and the first exits affected.
    """
    problems = []
    c, n = meta.n_classes, meta.splits[split]
    base = f"{where}/{split}"
    labels = arrays[fmt.LABELS]
    if labels.size and (labels.min() < 0 or labels.max() >= c):
        problems.append(f"{base}/{fmt.LABELS}: labels: outside [0, {c}) (min {labels.min()}, max {labels.max()})")
    sidx = arrays[fmt.SAMPLE_INDEX]
    if np.unique(sidx).size != n:
        problems.append(f"{base}/{fmt.SAMPLE_INDEX}: sample_index: values must be unique")
    ids, probs = arrays[fmt.TOPK_IDS], arrays[fmt.TOPK_PROBS]
    found: dict[str, list[int]] = {"nonfinite": [], "range": [], "order": [], "ids": []}
    for e0 in range(0, meta.n_exits, _EXIT_CHUNK):
        p = np.asarray(probs[e0:e0 + _EXIT_CHUNK], dtype=np.float64)  # (chunk, k, n_samples)
        i = np.asarray(ids[e0:e0 + _EXIT_CHUNK])
        nonfinite = ~np.isfinite(p).all(axis=(1, 2))
        out = ((p < 0) | (p > 1 + 1e-6)).any(axis=(1, 2)) | (p.sum(axis=1) > 1 + 1e-3).any(axis=1)
        flags = {"nonfinite": nonfinite, "range": out & ~nonfinite,
                 "order": (np.diff(p, axis=1) > 0).any(axis=(1, 2)),
                 "ids": ((i < 0) | (i >= c)).any(axis=(1, 2))}
        for kind, f in flags.items():
            found[kind].extend(int(e0 + j) for j in np.flatnonzero(f))
    lines = {
        "nonfinite": f"{base}/{fmt.TOPK_PROBS}: probabilities: NaN or inf values",
        "range": f"{base}/{fmt.TOPK_PROBS}: probabilities: outside [0, 1] or top-k summing above 1",
        "order": f"{base}/{fmt.TOPK_PROBS}: order: top-k not sorted descending",
        "ids": f"{base}/{fmt.TOPK_IDS}: class ids: outside [0, {c})",
    }
    problems.extend(f"{lines[kind]} {_exits_named(meta, idx)}" + ("; re-import or re-dump with the current version"
                                                                  if kind == "order" else "")
                    for kind, idx in found.items() if idx)
    logits = arrays.get(fmt.LOGITS)
    if logits is not None:
        bad = [e0 + j for e0 in range(0, meta.n_exits, _EXIT_CHUNK)
               for j in np.flatnonzero(~np.isfinite(np.asarray(logits[e0:e0 + _EXIT_CHUNK])).all(axis=(1, 2)))]
        if bad:
            problems.append(f"{base}/{fmt.LOGITS}: logits: NaN or inf values {_exits_named(meta, [int(b) for b in bad])}")
    return problems


def _load_split(path: Path, split: str, meta: CacheMeta, entries: dict, problems: list[str]) -> dict | None:
    """The split's arrays memory-mapped, or None (problems appended) when any file is missing or malformed."""
    arrays, n_before = {}, len(problems)
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
    return arrays if len(problems) == n_before else None


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
        arrays = _load_split(path, split, meta, entries, problems)
        if arrays is None:
            continue
        if checksums:
            for fname, a in arrays.items():
                want = entries.get(fname, {}).get("sha256")
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
    header = f"{'#':>3} {'exit':<40} {'pos':>4} {'head':<12} {'rel.MACs':>9}" + "".join(f" {s + ' acc':>12}" for s in cache.splits())
    lines.append(header)
    for i, e in enumerate(cache.exits):
        accs = []
        for s in cache.splits():
            top1 = np.asarray(cache.topk_ids(s)[i, 0])
            accs.append(f" {float((top1 == cache.labels(s)).mean()):>12.4f}")
        macs = sum(units[u].macs for u in e.units) / base
        lines.append(f"{i:>3} {e.name:<40} {e.position:>4} {e.head:<12} {macs:>9.4f}" + "".join(accs))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_cache.validate",
                                     description="Check a prediction cache and print what it holds.")
    parser.add_argument("cache", help="cache folder")
    parser.add_argument("--no-checksums", action="store_true", help="skip checksums (faster on big caches)")
    parser.add_argument("--quiet", action="store_true", help="print problems only")
    args = parser.parse_args(argv)
    problems = validate_cache(args.cache, checksums=not args.no_checksums)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        return 2
    if not args.quiet:
        from .reader import open_cache
        print(describe(open_cache(args.cache, validate="none")))
    print(f"{args.cache}: valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
