"""What at an output place the tool wrote itself, judged by content; and its careful removal (``--overwrite``).

Files and whole folders (``docs/outputs.md``): an existing file is replaced only when its own content says the
tool wrote it in the format the command writes (:class:`FileKind`: an ``exitconfig/1`` export, a report, a
checkpoint; a plot by its suffix), a folder only when its own manifest says so (:func:`check_owned_folder`), and
never a place that is, holds or lies inside an input of the same command (:func:`check_not_input`, real paths).
A JSON file of a folder format (a cache's or a bundle's manifest) is never a file output.

Cache folders: only files that the folder's own manifest lists (or the format's shard files under ``.parts/``) are
ever removed, one by one, after their names pass the reading rules; nothing is removed recursively,
links are removed as links (never followed), and anything else in the folder stays. When the manifest
cannot be trusted (unreadable, a split or file named like a path, a split folder that is a link) the
writer refuses in one line before touching anything.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import format as fmt
from .errors import CacheExistsError
from .schema import split_name_problem

__all__ = [
    "FileKind",
    "json_kind",
    "suffix_kind",
    "torch_kind",
    "json_format",
    "check_owned_file",
    "check_owned_folder",
    "check_not_input",
    "FOLDER_FORMATS",
    "OwnershipError",
    "Owned",
    "owned_by_cache",
    "owned_by_parts",
    "remove_owned",
    "clear_parts",
    "check_targets",
    "PARTS_META",
]

PARTS_META = "meta.json"
_PARTS_FILE = re.compile(
    r"(meta\.json|\.?\d{10}_\d{10}\.npz)(\.tmp\d+)?"
)  # shards, meta, their temp names
_KNOWN = fmt.SPLIT_FILES + fmt.OPTIONAL_SPLIT_FILES
FOLDER_FORMATS = (
    "exitcache/",
    "exitbundle/",
)  # manifests of folders: never replaced as a file output
_JSON_LIMIT = 64 << 20  # a file larger than this is not read as JSON to judge it


class OwnershipError(ValueError):
    """A place the tool did not write (or an input) named as an output; the message is one line without the option."""


@dataclass(frozen=True)
class FileKind:
    """What a command writes to one output file: ``owns(path)`` says whether an existing file there is one."""

    name: str
    owns: Callable[[Path], bool]


def json_format(path: Path) -> str | None:
    """The ``format`` field of the JSON object in ``path``; None when it is not one (or too large to judge)."""
    try:
        if path.stat().st_size > _JSON_LIMIT:
            return None
        data = path.read_bytes()
        if not data.lstrip()[:1] == b"{":
            return None
        doc = json.loads(data)
    except (OSError, ValueError, RecursionError):
        return None
    tag = doc.get("format") if isinstance(doc, dict) else None
    return tag if isinstance(tag, str) else None


def json_kind(tag: str) -> FileKind:
    """A JSON document whose ``format`` field is ``tag`` (``exitconfig/1``, ``exitvalidation/1``, ...)."""
    return FileKind(f"{tag} file", lambda p: json_format(p) == tag)


def suffix_kind(name: str, suffixes: Sequence[str]) -> FileKind:
    """A file recognised by its suffix alone (a figure: its bytes are the plotting library's)."""
    return FileKind(name, lambda p: p.suffix.lower() in suffixes)


def torch_kind(tag: str) -> FileKind:
    """A ``torch.save`` archive whose pickled record holds the format string ``tag`` (read without unpickling)."""

    def owns(p: Path) -> bool:
        try:
            with zipfile.ZipFile(p) as z:
                pickles = [n for n in z.namelist() if n.endswith("/data.pkl")]
                return len(pickles) == 1 and tag.encode() in z.read(pickles[0])
        except (OSError, zipfile.BadZipFile, ValueError, RuntimeError):
            return False

    return FileKind(f"{tag} checkpoint", owns)


def check_owned_file(path: Path, kind: FileKind | None) -> None:
    """Refuse (OwnershipError) replacing the existing file ``path`` unless it is a ``kind`` the tool wrote;
    a manifest of a folder format (a cache's, a bundle's) is refused whatever ``kind``."""
    tag = json_format(path)
    if tag is not None and tag.startswith(FOLDER_FORMATS):
        raise OwnershipError(
            f"is the manifest of a folder the tool wrote ({tag}); it is never replaced by a file"
        )
    if kind is not None and not kind.owns(path):
        raise OwnershipError(
            f"exists and is not a {kind.name} written by this tool; it is not replaced"
        )


def check_owned_folder(
    path: Path, tag: str, listed: Callable[[dict], Iterable[str]] | None = None
) -> None:
    """Refuse (OwnershipError) replacing the non-empty folder ``path`` unless its ``manifest.json`` says the
    tool wrote it as ``tag``; with ``listed`` (manifest -> the relative file paths it lists), also unless every
    file in it is the manifest or one it lists (a file added by hand is never deleted)."""
    manifest = path / fmt.MANIFEST
    if manifest.is_symlink() or not manifest.is_file():
        raise OwnershipError(
            f"holds files but no {fmt.MANIFEST}; it was not written by this tool and is not "
            "replaced: choose another folder"
        )
    got = json_format(manifest)
    if got != tag:
        raise OwnershipError(
            f"its {fmt.MANIFEST} is not a {tag} manifest (format {got!r}); the folder was not "
            f"written as a {tag} by this command and is not replaced: choose another folder"
        )
    if listed is None:
        return
    mine = {fmt.MANIFEST, *listed(json.loads(manifest.read_bytes()))}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = os.path.relpath(os.path.join(dirpath, name), path).replace(os.sep, "/")
            if rel not in mine:
                raise OwnershipError(
                    f"holds {rel}, which its {fmt.MANIFEST} does not list; the folder is not "
                    "replaced (move that file out first, or choose another folder)"
                )


def _inside(inner: str, outer: str) -> bool:
    return inner == outer or os.path.commonpath([inner, outer]) == outer


def check_not_input(
    path: Path, inputs: Sequence[tuple[str, str | os.PathLike | None]], *, folder: bool
) -> None:
    """Refuse (OwnershipError) an output ``path`` that is, lies inside or (a ``folder`` written whole) holds an
    input of the same command; real paths compared (links followed)."""
    out = os.path.realpath(path)
    for option, given in inputs:
        if given is None or str(given) == "":
            continue
        src = os.path.realpath(given)
        if out == src:
            what = "folder" if os.path.isdir(src) else "file"
            raise OwnershipError(f"is the {option} {what} this command reads; write elsewhere")
        if _inside(out, src):
            raise OwnershipError(
                f"lies inside {option} {given}, which this command reads; write elsewhere"
            )
        if folder and _inside(src, out):
            raise OwnershipError(
                f"holds {option} {given}, which this command reads; write elsewhere"
            )


@dataclass
class Owned:
    """Files (relative to the cache folder) the tool wrote, the split folders holding them, the manifest."""

    files: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    manifest: bool = False


def _refuse(path: Path, why: str) -> CacheExistsError:
    return CacheExistsError(
        f"{path}: {why}; nothing was removed (clear the folder yourself or choose another)"
    )


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
    if not isinstance(manifest, dict) or manifest.get("format") != fmt.format_tag():
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise _refuse(
            manifest_path,
            f"format: {got!r}: not a cache manifest ({fmt.format_tag()}); the folder was not "
            "written as a cache by this tool",
        )
    if not isinstance(manifest.get("splits"), dict):
        raise _refuse(manifest_path, "splits: not a manifest of this format")
    owned = Owned(manifest=True)
    for split, entry in manifest["splits"].items():
        owned.folders.append(_split_folder(path, split, manifest_path))
        files = entry.get("files", {}) if isinstance(entry, dict) else None
        if not isinstance(files, dict) or any(f not in _KNOWN for f in files):
            raise _refuse(
                manifest_path,
                f"splits.{split}.files: names a file that is not part of the format "
                f"(known: {list(_KNOWN)})",
            )
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
