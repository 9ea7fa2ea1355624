"""Check a cache folder: every problem one line ``file: field: problem``.

The command line is :mod:`data_cache.validate` (kept apart so ``python -m data_cache.validate`` runs
a module the package has not imported yet).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import format as fmt
from ._base import CacheMeta, meta_from_manifest, read_manifest
from .errors import CacheError
from .fingerprint import cache_fingerprint
from .integrity import NpyLayout, read_npy_layout, run_jobs, split_jobs

__all__ = [
    "validate_cache",
    "check_cache_files",
    "describe",
    "identical_splits",
    "identical_splits_messages",
    "never_right",
    "never_right_line",
]


def _layout(
    root: Path, f: Path, want_shape: tuple, want_dtype: np.dtype, problems: list[str]
) -> NpyLayout | None:
    """The file's layout when it is a readable .npy file inside the cache with the right shape and dtype;
    else a problem line. A link is followed only when it stays inside the cache folder."""
    if not f.exists():
        link = f" (a link to {os.readlink(f)} that does not exist)" if f.is_symlink() else ""
        problems.append(f"{f}: missing file{link}")
        return None
    real = Path(os.path.realpath(f))
    if not real.is_relative_to(root):
        problems.append(
            f"{f}: a link to {real}, outside the cache folder; copy the file into the cache"
        )
        return None
    if not real.is_file():
        problems.append(f"{f}: not a regular file")
        return None
    try:
        layout = read_npy_layout(f)
    except (ValueError, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        problems.append(f"{f}: not a readable .npy file ({reason})")
        return None
    if layout.shape != want_shape:
        problems.append(f"{f}: shape: {layout.shape}, expected {want_shape}")
        return None
    if layout.dtype != want_dtype:
        problems.append(f"{f}: dtype: {layout.dtype}, expected {want_dtype}")
        return None
    return layout


def validate_cache(
    path: str | Path,
    *,
    skip_integrity_check: bool = False,
    checksums: bool = True,
    workers: int | None = None,
) -> list[str]:
    """Every problem found in the cache at ``path``, one line each; an empty list means valid.

    Always: the manifest against the schema, every file of the cache present inside the folder with the
    right header (shape, dtype), the fingerprint. Unless ``skip_integrity_check``: one streaming pass
    over the cache's own files (``integrity.py``) checks every value and, with ``checksums``, every
    sha256, on ``workers`` threads (default: every core).
    """
    path = Path(path)
    try:
        if not path.is_dir():
            return [f"{path}: not a folder"]
    except OSError as exc:  # a name too long for the file system (ENAMETOOLONG)
        return [f"{path}: cannot read ({exc.strerror or exc})"]
    try:
        manifest = read_manifest(path)
        meta = meta_from_manifest(manifest, source=str(path / fmt.MANIFEST), with_files=True)
    except CacheError as exc:
        return exc.problems
    return check_cache_files(
        path,
        manifest,
        meta,
        skip_integrity_check=skip_integrity_check,
        checksums=checksums,
        workers=workers,
    )


def check_cache_files(
    path: Path,
    manifest: dict,
    meta: CacheMeta,
    *,
    skip_integrity_check: bool = False,
    checksums: bool = True,
    workers: int | None = None,
) -> list[str]:
    """What :func:`validate_cache` checks beyond the manifest's schema, given the manifest already read and
    checked (``meta``): required splits, every file's layout, the integrity pass, the fingerprint.
    ``open_cache`` calls it with the manifest its reader parsed, so a run reads the manifest once."""
    manifest_path = path / fmt.MANIFEST
    problems: list[str] = []
    for split in fmt.REQUIRED_SPLITS:
        if split not in meta.splits:
            problems.append(f"{manifest_path}: splits: required split {split!r} is missing")
    root = Path(os.path.realpath(path))
    jobs = []
    for split, n in meta.splits.items():
        entries = manifest["splits"][split]["files"]
        layouts = {}
        for fname in entries:
            want = fmt.expected_shape(
                fname, n_exits=meta.n_exits, k=meta.k, n_samples=n, n_classes=meta.n_classes
            )
            layout = _layout(root, path / split / fname, want, fmt.DTYPES[fname], problems)
            if layout is not None:
                layouts[fname] = layout
        if not skip_integrity_check:
            jobs.extend(split_jobs(path, split, meta, layouts, entries, checksums=checksums))
    problems.extend(run_jobs(jobs, workers) if jobs else [])
    if manifest.get("fingerprint") != cache_fingerprint(manifest):
        problems.append(f"{manifest_path}: fingerprint: does not match the manifest's content")
    return problems


def identical_splits(manifest: dict) -> list[tuple[str, str]]:
    """Pairs of splits whose labels and top-k files have the same recorded checksums: the same predictions
    given twice (e.g. one dump written as both search and holdout). Legal, but figures on the second are not
    independent of the first: the command lines warn about it."""

    def digest(split: dict) -> tuple | None:
        files = split.get("files") if isinstance(split, dict) else None
        if not isinstance(files, dict):
            return None
        sums = tuple(
            (files.get(name) or {}).get("sha256")
            for name in (fmt.LABELS, fmt.TOPK_IDS, fmt.TOPK_PROBS)
        )
        return None if None in sums else sums

    seen: dict[tuple, str] = {}
    pairs = []
    for name, split in (manifest.get("splits") or {}).items():
        key = digest(split)
        if key is None:
            continue
        if key in seen:
            pairs.append((seen[key], name))
        else:
            seen[key] = name
    return pairs


def identical_splits_messages(manifest: dict, where: str = "") -> list[str]:
    """What to say about each pair of :func:`identical_splits` (``where``: a prefix naming the cache)."""
    return [
        f"{where}splits {a!r} and {b!r} of the cache hold the same predictions (identical files); figures on "
        f"{b!r} are not independent of {a!r}"
        for a, b in identical_splits(manifest)
    ]


def warn_identical_splits(manifest: dict, where: str = "") -> None:
    """One ``warning:`` line per pair of :func:`identical_splits` (``where``: a prefix naming the cache)."""
    from .cli_types import warn

    for line in identical_splits_messages(manifest, where):
        warn(line)


def never_right_line(name: str, final: bool, split: str, n_samples: int) -> str:
    """The warning for an exit whose top-1 is never the label (shared with ``search.pareto``)."""
    what = f"the base model (final exit {name!r})" if final else f"exit {name!r}"
    return (
        f"{what} is never right on split {split!r} (0 of {n_samples:,} samples): its labels and predictions "
        "disagree everywhere (labels of another dataset or class order?)"
    )


def never_right(cache, splits=None) -> list[str]:
    """One line per (split, exit) whose top-1 prediction is wrong on every sample: legal, but nothing a search
    finds there means anything; the command lines print them as warnings. ``splits``: default every split."""
    lines = []
    for s in cache.splits() if splits is None else splits:
        labels, n = np.asarray(cache.labels(s)), cache.n_samples(s)
        if not n:
            continue
        ids = cache.topk_ids(s)
        for i, e in enumerate(cache.exits):
            if not np.any(np.asarray(ids[i, 0]) == labels):
                lines.append(never_right_line(e.name, i == len(cache.exits) - 1, s, n))
    return lines


def describe(cache) -> str:
    """A human-readable summary: splits, exits with units and per-exit top-1 accuracy."""
    lines = [repr(cache), f"fingerprint: {cache.fingerprint}"]
    for s in cache.splits():
        lines.append(
            f"split {s}: {cache.n_samples(s)} samples; {cache.meta.split_definitions.get(s, '')}"
        )
    units = {u.name: u for u in cache.units}
    base = sum(units[u].macs for u in cache.exits[-1].units) or 1.0
    lines.append(
        f"{'#':>3} {'exit':<40} {'pos':>4} {'head':<12} {'rel.MACs':>9}"
        + "".join(f" {s + ' acc':>12}" for s in cache.splits())
    )
    for i, e in enumerate(cache.exits):
        accs = []
        for s in cache.splits():
            top1 = np.asarray(cache.topk_ids(s)[i, 0])
            accs.append(f" {float((top1 == cache.labels(s)).mean()):>12.4f}")
        macs = sum(units[u].macs for u in e.units) / base
        lines.append(
            f"{i:>3} {e.name:<40} {e.position:>4} {e.head:<12} {macs:>9.4f}" + "".join(accs)
        )
    return "\n".join(lines)
