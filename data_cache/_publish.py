"""Work folders of the output policy: outputs built beside their target, published without replacing anything,
and swept once the run that made them is gone (``docs/outputs.md``).

A file or folder a command writes is first built in a work folder beside its target,
``.<target name>.exitsearch-<pid>-<token>.tmp/``, which holds the tool's marker ``.exitsearch-owner`` (JSON: the
tool, the process id, the host) and the payload. A file is published with ``os.link`` (it fails when anything is
there: two runs never both succeed), a folder by renaming it over the empty placeholder the run reserved at its
start (``.exitsearch-reserved`` inside the target). :func:`sweep` removes the work folders, and
:func:`sweep_reservation` the placeholders, whose marker names a process of this host that has ended: the name
pattern and the marker together prove they are the tool's own; nothing else is touched.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path

__all__ = [
    "MARKER",
    "RESERVED",
    "make_work",
    "remove_work",
    "sweep",
    "reserve_folder",
    "release_reservation",
    "sweep_reservation",
    "link_file",
]

TOOL = "exitsearch"
MARKER = ".exitsearch-owner"
RESERVED = ".exitsearch-reserved"
_WORK = re.compile(r"\..+\.exitsearch-(\d+)-[0-9a-f]{12}\.tmp")
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _stamp(**extra) -> str:
    return json.dumps({"tool": TOOL, "pid": os.getpid(), "host": socket.gethostname(), **extra})


def _dead_own(marker: Path, pid: int | None = None) -> dict | None:
    """The marker's record when it is the tool's, of this host, of a process that has ended (and ``pid``)."""
    try:
        if marker.is_symlink() or marker.stat().st_size > 4096:
            return None
        rec = json.loads(marker.read_bytes())
    except (OSError, ValueError):
        return None
    if not (
        isinstance(rec, dict)
        and rec.get("tool") == TOOL
        and rec.get("host") == socket.gethostname()
        and isinstance(rec.get("pid"), int)
        and rec["pid"] > 0
        and pid in (None, rec["pid"])
    ):
        return None
    return None if _alive(rec["pid"]) else rec


def make_work(target: Path) -> Path:
    """A new work folder beside ``target``, marked as this run's."""
    work = target.with_name(f".{target.name}.exitsearch-{os.getpid()}-{secrets.token_hex(6)}.tmp")
    work.mkdir()
    (work / MARKER).write_text(_stamp(target=target.name))
    return work


def remove_work(work: Path) -> None:
    """Remove this run's work folder and what is left in it (links removed as links, never followed)."""
    shutil.rmtree(work, ignore_errors=True)


def sweep(folder: Path) -> list[Path]:
    """Remove the work folders in ``folder`` left by runs of this host that have ended; return them."""
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _WORK.fullmatch(entry.name)
        if (
            m
            and entry.is_dir()
            and not entry.is_symlink()
            and _dead_own(entry / MARKER, int(m.group(1)))
        ):
            remove_work(entry)
            removed.append(entry)
    return removed


def reserve_folder(target: Path) -> str:
    """Reserve the missing or empty folder ``target`` for this run: its placeholder is created exclusively, so a
    second run fails here (FileExistsError); return the reservation's token."""
    created = False
    try:
        target.mkdir()
        created = True
    except FileExistsError:
        pass
    token = secrets.token_hex(6)
    fd = os.open(target / RESERVED, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(_stamp(token=token, created=created))
    return token


def _reservation(target: Path) -> dict | None:
    try:
        rec = json.loads((target / RESERVED).read_bytes())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def release_reservation(target: Path, token: str, *, publishing: bool) -> bool:
    """Remove this run's placeholder (``token``); when not ``publishing``, the folder too if the run created it
    and it is empty again. False when the placeholder is not this run's any more."""
    rec = _reservation(target)
    if rec is None or rec.get("token") != token:
        return False
    (target / RESERVED).unlink()
    if rec.get("created") and not publishing:
        try:
            target.rmdir()
        except OSError:
            pass
    return True


def sweep_reservation(target: Path) -> bool:
    """Remove the placeholder of an ended run of this host from ``target`` (and the folder, if that run created
    it and it is empty); True when one was removed."""
    rec = _dead_own(target / RESERVED) if target.is_dir() and not target.is_symlink() else None
    if rec is None:
        return False
    (target / RESERVED).unlink()
    if rec.get("created"):
        try:
            target.rmdir()
        except OSError:
            pass
    return True


def link_file(src: Path, target: Path) -> None:
    """Make ``src`` appear at ``target`` only if nothing is there (FileExistsError otherwise): a hard link, or on a
    file system without them an exclusively created placeholder then replaced."""
    try:
        os.link(src, target)
        return
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    os.replace(src, target)
