"""What every output of a command line shares: the one-line :class:`OutputError` and the check of the
place an output names (``docs/outputs.md``)."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from .cli_types import check_name_length

Inputs = Sequence[tuple[str, "str | os.PathLike | None"]]  # (option, path) a command reads


class OutputError(ValueError):
    """An output path that cannot be used, or a write that failed; the message is one line."""


def _reason(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, "") or str(exc)


def check_output_place(path: str | os.PathLike, *, option: str, what: str) -> Path:
    """``path`` as a Path if it names a ``what`` (file or folder) in an existing folder, else
    :class:`OutputError` (an empty name, ``.`` or ``..``; a parent that is a file or does not exist). What is
    at ``path`` is not looked at."""
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise OutputError(f"{option} {str(path)!r}: not a {what} name")
    try:
        check_name_length(p, option, spare=16)  # atomic_output's temporary name adds up to 16 bytes
    except ValueError as exc:
        raise OutputError(str(exc)) from None
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{option} {p}: {parent} is a file, not a folder")
    if not parent.exists():
        raise OutputError(f"{option} {p}: folder {parent} does not exist; create it first")
    return p
