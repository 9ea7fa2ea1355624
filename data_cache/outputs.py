"""Output files of every command line: checked before any work, written atomically, never replaced unasked.

One policy for the whole project (``docs/outputs.md``):

- :func:`check_output_file` runs at the boundary, before any work: an existing folder, a missing parent
  folder, a parent that is a file, an unwritable folder or an unwanted suffix is one line naming the
  path; an existing file is refused unless the command was given ``--overwrite``.
- :func:`check_outputs` checks every file a command writes at once: each as above, no two the same file,
  none the same as an input file, and a line ``warning: ... replacing ...`` for each file ``--overwrite``
  will replace.
- :func:`atomic_output` / :func:`write_text_atomic` write a temporary file in the same folder and rename
  it over the target, so a full disk or a kill never leaves a half-written file that looks valid;
  :func:`atomic_outputs` writes several files so that none is replaced unless all were written.
- :func:`check_output_folder` / :func:`atomic_folder` do the same for a folder written whole (a bundle): a
  non-empty folder is refused unless ``--overwrite`` (and then only one holding the tool's own marker file);
  the folder is built under a temporary name beside it and renamed into place at the end.
- :func:`cli_entry` ends a command quietly (status 0 for what it already printed) when stdout is closed
  under it (``... | head -1``), and cleanly (temporary files removed, workers stopped) on SIGTERM or Ctrl-C.

Standard library only: ``search`` (numpy), ``data_cache`` and ``exits`` (torch) all use it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from .cli_types import check_name_length

__all__ = ["OutputError", "check_output_place", "check_output_file", "check_outputs", "atomic_output", "atomic_outputs",
           "write_text_atomic", "check_output_folder", "atomic_folder", "cli_entry"]


class OutputError(ValueError):
    """An output path that cannot be used, or a write that failed; the message is one line."""


def check_output_place(path: str | os.PathLike, *, option: str, what: str) -> Path:
    """``path`` as a Path if it names a ``what`` (file or folder) in an existing folder, else :class:`OutputError`
    (an empty name, ``.`` or ``..``; a parent that is a file or does not exist). What is at ``path`` is not looked at."""
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


def check_output_file(path: str | os.PathLike, *, overwrite: bool, option: str = "output",
                      suffixes: Sequence[str] | None = None) -> Path:
    """``path`` as a Path if a file can be written there, else :class:`OutputError` naming it.

    ``option`` names the command-line option in messages (``--export``); ``suffixes`` (lower case,
    with the dot) restricts the file's suffix. An existing file is accepted only with ``overwrite``.
    """
    p = check_output_place(path, option=option, what="file")
    if p.is_dir():
        raise OutputError(f"{option} {p}: is a folder; name a file inside it")
    exists = p.exists() or p.is_symlink()
    if exists and not p.is_file():
        raise OutputError(f"{option} {p}: exists and is not a regular file")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise OutputError(f"{option} {p}: unknown file type {p.suffix or '(none)'!r}; use one of {', '.join(suffixes)}")
    if exists and not overwrite:
        raise OutputError(f"{option} {p}: file exists; pass --overwrite to replace it")
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {p}: folder {p.parent} is not writable")
    return p


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_outputs(outputs: Sequence[tuple[str, str | os.PathLike | None]], *, overwrite: bool,
                  suffixes: Mapping[str, Sequence[str]] | None = None,
                  inputs: Sequence[tuple[str, str | os.PathLike | None]] = ()) -> dict[str, Path]:
    """Check every file a command will write, before any work; ``{option: Path}`` of those given.

    ``outputs`` and ``inputs`` are ``(option, path or None)`` pairs (``None``: not asked for). Each output
    passes :func:`check_output_file` (``suffixes[option]`` restricts its type); two outputs naming the same
    file, or an output naming an input file (``--report`` the ``--config`` file), are refused; each existing
    file that ``overwrite`` lets be replaced is announced in one line on stderr (``warning: ...``).
    """
    checked: dict[str, Path] = {}
    for option, path in outputs:
        if path is None:
            continue
        p = check_output_file(path, overwrite=overwrite, option=option, suffixes=(suffixes or {}).get(option))
        for other, q in checked.items():
            if _same_file(p, q):
                raise OutputError(f"{option} {p}: is also the {other} file; give each output its own file")
        for other, q in inputs:
            if q is not None and _same_file(p, Path(q)):
                raise OutputError(f"{option} {p}: is the {other} file this command reads; write elsewhere")
        checked[option] = p
    for option, p in checked.items():
        if p.is_file():
            print(f"warning: {option} {p}: replacing the existing file (--overwrite)", file=sys.stderr)
    return checked


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, option: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    An ``OSError`` while writing (a full disk, a vanished folder) becomes :class:`OutputError`.
    """
    target = Path(path)
    if target.exists() and not target.is_file():
        raise OutputError(f"{option} {target}: exists and is not a regular file")
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "") or str(exc)
        raise OutputError(f"{option} {target}: could not write ({reason})") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_outputs(targets: Sequence[tuple[str, str | os.PathLike]]) -> Iterator[list[Path]]:
    """Yield a temporary path for each ``(option, path)``; only when every one was written do they replace
    their targets, so a failure writing the second file leaves the first untouched too."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_output(path, option=option)) for option, path in targets]


def write_text_atomic(path: str | os.PathLike, text: str, *, option: str = "output") -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, then rename, fsynced)."""
    with atomic_output(path, option=option) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def check_output_folder(path: str | os.PathLike, *, overwrite: bool, option: str = "--out",
                        marker: str | None = None) -> Path:
    """``path`` as a Path if a folder can be written there as a whole, else :class:`OutputError` naming it.

    A missing or empty folder is accepted; a non-empty one only with ``overwrite``, and then, when ``marker``
    is given, only if it holds that file (the tool's own manifest: a folder the tool did not write is never
    replaced).
    """
    p = check_output_place(path, option=option, what="folder")
    parent = p.parent
    if p.exists() or p.is_symlink():
        if not p.is_dir() or p.is_symlink():
            raise OutputError(f"{option} {p}: exists and is not a folder")
        if any(p.iterdir()):
            if not overwrite:
                raise OutputError(f"{option} {p}: folder is not empty; pass --overwrite to replace it")
            if marker is not None and not (p / marker).is_file():
                raise OutputError(f"{option} {p}: folder holds files but no {marker}; it was not written by this "
                                  "tool and is not replaced: choose another folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {p}: folder {parent} is not writable")
    return p


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, option: str = "--out") -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it takes ``path``'s place (a folder already
    there is moved aside first and removed after the swap), on failure it is removed.

    An ``OSError`` (a full disk, a vanished folder) becomes :class:`OutputError`.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        yield tmp
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():  # the swap failed half-way: put the old folder back
            with contextlib.suppress(OSError):
                os.replace(old, target)
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "") or str(exc)
        raise OutputError(f"{option} {target}: could not write ({reason})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def cli_entry(main: Callable[[], int]) -> int:
    """Run a command line's ``main``; a closed stdout (``| head``) ends it quietly with status 0.

    SIGTERM ends it like an exception (status 143), so that temporary files are removed and worker
    processes stopped on the way out; Ctrl-C prints one line (status 130)."""
    previous = None
    with contextlib.suppress(ValueError):   # not the main thread: leave signals alone
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        status = main()
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout is gone: point it at /dev/null so the interpreter's final flush raises nothing
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        if previous is not None:   # a caller running the command in-process keeps its own handler
            signal.signal(signal.SIGTERM, previous)
