"""What in an output folder the tool wrote itself, and its careful removal (``--overwrite``).

Only files that the folder's own manifest lists (or the format's shard files under ``.parts/``) are
ever removed, one by one, after their names pass the reading rules; nothing is removed recursively,
links are removed as links (never followed), and anything else in the folder stays. When the manifest
cannot be trusted (unreadable, a split or file named like a path, a split folder that is a link) the
writer refuses in one line before touching anything.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import format as fmt
from .errors import CacheExistsError
from .schema import split_name_problem

__all__ = ["Owned", "owned_by_cache", "owned_by_parts", "remove_owned", "clear_parts", "check_targets", "PARTS_META"]

PARTS_META = "meta.json"
_PARTS_FILE = re.compile(r"(meta\.json|\.?\d{10}_\d{10}\.npz)(\.tmp\d+)?")  # shards, meta, their temp names
_KNOWN = fmt.SPLIT_FILES + fmt.OPTIONAL_SPLIT_FILES


@dataclass
class Owned:
    """Files (relative to the cache folder) the tool wrote, the split folders holding them, the manifest."""

    files: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    manifest: bool = False


def _refuse(path: Path, why: str) -> CacheExistsError:
    return CacheExistsError(f"{path}: {why}; nothing was removed (clear the folder yourself or choose another)")


def _split_folder(path: Path, split, where: Path) -> str:
    problem = split_name_problem(split)
    if problem:
        raise _refuse(where, f"splits: {problem}")
    folder = path / split
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise _refuse(folder, "is a link or a file where the cache keeps a split folder")
    return split


def owned_by_cache(path: Path) -> Owned:
    """What the complete cache at ``path`` lists, checked by the reading rules (else CacheExistsError)."""
    manifest_path = path / fmt.MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise _refuse(manifest_path, f"not a readable manifest ({type(exc).__name__})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
        raise _refuse(manifest_path, "splits: not a manifest of this format")
    owned = Owned(manifest=True)
    for split, entry in manifest["splits"].items():
        owned.folders.append(_split_folder(path, split, manifest_path))
        files = entry.get("files", {}) if isinstance(entry, dict) else None
        if not isinstance(files, dict) or any(f not in _KNOWN for f in files):
            raise _refuse(manifest_path, f"splits.{split}.files: names a file that is not part of the format "
                                         f"(known: {list(_KNOWN)})")
        owned.files.extend(f"{split}/{f}" for f in files)
    return owned


def owned_by_parts(path: Path) -> Owned:
    """The files an interrupted ``finalize`` may have assembled, for the splits ``.parts/meta.json`` names."""
    owned = Owned()
    try:
        splits = json.loads((path / fmt.PARTS_DIR / PARTS_META).read_text()).get("splits", {})
    except (OSError, ValueError, RecursionError, AttributeError):
        return owned
    for split in splits if isinstance(splits, dict) else ():
        if split_name_problem(split) is None and not (path / split).is_symlink():
            owned.files.extend(f"{split}/{f}" for f in _KNOWN)
    return owned


def check_targets(path: Path, splits, owned: Owned) -> None:
    """Refuse when writing ``splits`` would replace a file or folder that the tool did not write."""
    mine = set(owned.files)
    for split in splits:
        _split_folder(path, split, path / split)
        for fname in _KNOWN:
            target = path / split / fname
            if (target.exists() or target.is_symlink()) and f"{split}/{fname}" not in mine:
                raise _refuse(target, "would be replaced, but it is not part of the cache there")
    parts = path / fmt.PARTS_DIR
    if parts.is_symlink() or (parts.exists() and not parts.is_dir()):
        raise _refuse(parts, "is a link or a file where the writer keeps its shards")


def remove_owned(path: Path, owned: Owned) -> None:
    """Remove the listed files (links as links), then their folders if empty, the manifest last."""
    for rel in owned.files:
        target = path / rel
        if target.is_symlink() or target.is_file():
            target.unlink()
    for folder in owned.folders:
        try:
            (path / folder).rmdir()
        except OSError:  # missing, or it holds someone else's files: they stay
            pass
    if owned.manifest:
        (path / fmt.MANIFEST).unlink(missing_ok=True)


def clear_parts(parts: Path) -> None:
    """Remove the writer's shards and notes under ``.parts/`` (nothing else), then the empty folders."""
    if not parts.is_dir() or parts.is_symlink():
        return
    for entry in list(parts.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and split_name_problem(entry.name) is None:
            for f in entry.iterdir():
                if _PARTS_FILE.fullmatch(f.name) and (f.is_file() or f.is_symlink()):
                    f.unlink()
            _rmdir_if_empty(entry)
        elif _PARTS_FILE.fullmatch(entry.name) and (entry.is_file() or entry.is_symlink()):
            entry.unlink()
    _rmdir_if_empty(parts)


def _rmdir_if_empty(folder: Path) -> None:
    try:
        os.rmdir(folder)
    except OSError:
        pass
