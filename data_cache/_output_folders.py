"""A folder written whole (a bundle): checked at the boundary, built beside its target, renamed into
place (``docs/outputs.md``); re-exported by ``outputs.py``."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ._output_place import Inputs, OutputError, _reason, check_output_place
from ._publish import (
    RESERVED,
    make_work,
    release_reservation,
    remove_work,
    reserve_folder,
    sweep,
    sweep_reservation,
)
from .ownership import OwnershipError, check_not_input, check_owned_folder

__all__ = ["check_output_folder", "atomic_folder"]


def _entries(p: Path) -> list[str]:
    return sorted(e.name for e in p.iterdir()) if p.is_dir() and not p.is_symlink() else []


def check_output_folder(
    path: str | os.PathLike,
    *,
    overwrite: bool,
    option: str = "--out",
    format: str | None = None,
    listed: Callable[[dict], Iterable[str]] | None = None,
    inputs: Inputs = (),
    announce: bool = True,
) -> Path:
    """``path`` as a Path if a folder can be written there as a whole, else :class:`OutputError` naming it.

    A missing or empty folder is accepted; a non-empty one only with ``overwrite``, and then, when ``format`` is
    given, only if its own ``manifest.json`` names that format (and, with ``listed``, lists every file in it:
    ``ownership.check_owned_folder``); the replacement is announced unless not ``announce``. The folder may not
    be, hold or lie inside an input (``inputs``). Work folders and placeholders of ended runs are swept first.
    """
    p = check_output_place(path, option=option, what="folder")
    sweep(p.parent)
    sweep_reservation(p)
    if p.exists() or p.is_symlink():
        if not p.is_dir() or p.is_symlink():
            raise OutputError(f"{option} {p}: exists and is not a folder")
    try:
        check_not_input(p, inputs, folder=True)
        entries = _entries(p)
        if RESERVED in entries:
            raise OwnershipError(
                f"another run is writing there (its placeholder {RESERVED} is in it); wait for it "
                "or choose another folder"
            )
        if entries and not overwrite:
            raise OwnershipError("folder is not empty; pass --overwrite to replace it")
        if entries and format is not None:
            check_owned_folder(p, format, listed)
    except OwnershipError as exc:
        raise OutputError(f"{option} {p}: {exc}") from None
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {p}: folder {p.parent} is not writable")
    if entries and announce:
        print(f"warning: {option} {p}: replacing the folder there (--overwrite)", file=sys.stderr)
    return p


def _swap_folder(
    built: Path,
    target: Path,
    work: Path,
    *,
    option: str,
    format: str | None,
    listed: Callable[[dict], Iterable[str]] | None,
) -> None:
    """``--overwrite``: the folder at ``target`` (its owner checked again) moved into ``work``, ``built`` renamed
    into its place, the old folder removed with ``work``; on a failure half-way the old folder is put back."""
    entries = _entries(target)
    if RESERVED in entries:
        raise OutputError(
            f"{option} {target}: another run reserved it while this command ran; it is not replaced"
        )
    if entries and format is not None:
        try:
            check_owned_folder(target, format, listed)
        except OwnershipError as exc:
            raise OutputError(f"{option} {target}: {exc}") from None
    old = work / "replaced"
    moved = target.exists()
    if moved:
        os.replace(target, old)
    try:
        os.rename(built, target)
    except OSError:
        if moved and not target.exists():
            os.replace(old, target)
        raise


@contextlib.contextmanager
def atomic_folder(
    path: str | os.PathLike,
    *,
    option: str = "--out",
    overwrite: bool = False,
    format: str | None = None,
    listed: Callable[[dict], Iterable[str]] | None = None,
) -> Iterator[Path]:
    """Yield an empty folder to build ``path`` in; on success it takes ``path``'s place, on failure it is removed.

    A missing or empty target is reserved at once (a placeholder created exclusively: a second run fails here)
    and the built folder renamed over it; a non-empty target is replaced only with ``overwrite``, its owner
    checked again (``format``, ``listed``: :func:`check_output_folder`). An ``OSError`` (a full disk, a vanished
    folder) becomes :class:`OutputError` naming ``path``.
    """
    target = Path(path)
    token = work = None
    try:
        entries = _entries(target)
        if not entries:
            with contextlib.suppress(FileExistsError):
                token = reserve_folder(target)
        if token is None and (not entries or RESERVED in entries):
            raise OutputError(
                f"{option} {target}: another run is writing there; wait for it or choose another "
                "folder"
            )
        if entries and not overwrite:
            raise OutputError(
                f"{option} {target}: folder is not empty; pass --overwrite to replace it"
            )
        work = make_work(target)
        built = work / target.name
        built.mkdir()
        yield built
        if token is None:
            _swap_folder(built, target, work, option=option, format=format, listed=listed)
        elif not release_reservation(target, token, publishing=True):
            raise OutputError(
                f"{option} {target}: this run's placeholder was removed while it ran; nothing was "
                "written there"
            )
        else:
            token = None
            try:
                os.rename(built, target)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise OutputError(
                        f"{option} {target}: files appeared there while this command ran; they are not "
                        "replaced"
                    ) from None
                raise
    except OSError as exc:
        raise OutputError(f"{option} {target}: could not write ({_reason(exc)})") from None
    finally:
        if token is not None:
            release_reservation(target, token, publishing=False)
        if work is not None:
            remove_work(work)
