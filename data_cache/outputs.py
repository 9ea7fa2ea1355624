"""Outputs of every command line: checked before any work, owned by content, published without replacing.

One policy for the whole project (``docs/outputs.md``):

- :func:`check_output_file` / :func:`check_outputs` run at the boundary, before any work: an existing folder, a
  missing parent folder, a parent that is a file, an unwritable folder or an unwanted suffix is one line naming
  the path; an output that is, or lies inside, an input of the same command is refused; an existing file is
  refused unless ``--overwrite``, and even then unless its own content says the tool wrote it as the ``kind`` the
  command writes (``ownership.FileKind``; a cache's or a bundle's manifest never). Replacements are announced
  (``warning: ...``).
- :func:`atomic_output` / :func:`atomic_outputs` / :func:`write_text_atomic` build each file in a work folder
  beside its target and publish it with a hard link, which fails when anything is there: two runs never both
  succeed, and a file created at the target during a long run is not replaced unless ``--overwrite`` (then the
  owner check runs again at publish). Several files: none is published unless all were written.
- :func:`check_output_folder` / :func:`atomic_folder` do the same for a folder written whole (a bundle): the
  target is reserved with a placeholder at the start and the built folder renamed over it at the end; with
  ``--overwrite``, only a folder whose own manifest names the command's format (and lists every file in it).
- Work folders and placeholders of killed runs are swept at the next start (``_publish.py``); messages name
  the user's path, never the temporary one.
- :func:`cli_entry` ends a command quietly (status 0 for what it already printed) when stdout is closed
  under it (``... | head -1``), and cleanly (temporary files removed, workers stopped) on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._output_folders import atomic_folder, check_output_folder
from ._output_place import Inputs, OutputError, _reason, check_output_place
from ._publish import (
    link_file,
    make_work,
    remove_work,
    sweep,
)
from .interrupts import exit_on_sigterm, interrupts_deferred
from .ownership import (
    FileKind,
    OwnershipError,
    check_not_input,
    check_owned_file,
)

__all__ = [
    "OutputError",
    "check_output_place",
    "check_output_file",
    "check_outputs",
    "atomic_output",
    "atomic_outputs",
    "write_text_atomic",
    "check_output_folder",
    "atomic_folder",
    "cli_entry",
]

# files by (device, inode, mtime, size): so one replaced or edited since is not the same file any more
_ANNOUNCED: set[tuple[int, ...]] = set()  # files whose replacement was announced at the boundary
_PUBLISHED: set[tuple] = (
    set()
)  # (thread, file) this thread published, unchanged since: its own to replace


def check_output_file(
    path: str | os.PathLike,
    *,
    overwrite: bool,
    option: str = "output",
    suffixes: Sequence[str] | None = None,
    kind: FileKind | None = None,
    inputs: Inputs = (),
) -> Path:
    """``path`` as a Path if a file can be written there, else :class:`OutputError` naming it.

    ``option`` names the command-line option in messages (``--export``); ``suffixes`` (lower case, with the dot)
    restricts the file's suffix; ``inputs`` (``(option, path)``) are what the command reads: the output may not
    be or lie inside one. An existing file is accepted only with ``overwrite``, and only when it is a ``kind``
    the tool wrote. Work folders of ended runs beside it are swept.
    """
    p = check_output_place(path, option=option, what="file")
    sweep(p.parent)
    if p.is_dir():
        raise OutputError(f"{option} {p}: is a folder; name a file inside it")
    exists = p.exists() or p.is_symlink()
    if exists and not p.is_file():
        raise OutputError(f"{option} {p}: exists and is not a regular file")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise OutputError(
            f"{option} {p}: unknown file type {p.suffix or '(none)'!r}; use one of {', '.join(suffixes)}"
        )
    try:
        check_not_input(p, inputs, folder=False)
        if exists and overwrite:
            check_owned_file(p, kind)
    except OwnershipError as exc:
        raise OutputError(f"{option} {p}: {exc}") from None
    if exists and not overwrite:
        raise OutputError(f"{option} {p}: file exists; pass --overwrite to replace it")
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {p}: folder {p.parent} is not writable")
    return p


def _identity(path: Path) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_outputs(
    outputs: Sequence[tuple[str, str | os.PathLike | None]],
    *,
    overwrite: bool,
    suffixes: Mapping[str, Sequence[str]] | None = None,
    inputs: Inputs = (),
    kinds: Mapping[str, FileKind] | None = None,
) -> dict[str, Path]:
    """Check every file a command will write, before any work; ``{option: Path}`` of those given.

    ``outputs`` and ``inputs`` are ``(option, path or None)`` pairs (``None``: not asked for). Each output
    passes :func:`check_output_file` (``suffixes[option]`` restricts its type, ``kinds[option]`` says what an
    existing file must be to be replaced); two outputs naming the same file are refused; each existing file
    that ``overwrite`` lets be replaced is announced in one line on stderr (``warning: ...``).
    """
    checked: dict[str, Path] = {}
    for option, path in outputs:
        if path is None:
            continue
        p = check_output_file(
            path,
            overwrite=overwrite,
            option=option,
            suffixes=(suffixes or {}).get(option),
            kind=(kinds or {}).get(option),
            inputs=inputs,
        )
        for other, q in checked.items():
            if _same_file(p, q):
                raise OutputError(
                    f"{option} {p}: is also the {other} file; give each output its own file"
                )
        checked[option] = p
    for option, p in checked.items():
        identity = _identity(p) if p.is_file() else None
        if identity is not None:
            _ANNOUNCED.add(identity)
            print(
                f"warning: {option} {p}: replacing the existing file (--overwrite)", file=sys.stderr
            )
    return checked


@dataclass
class _Pending:
    """One file being written: its target, its work folder and the temporary file in it."""

    option: str
    target: Path
    kind: FileKind | None
    work: Path
    inode: tuple[int, int] | None = None

    @property
    def tmp(self) -> Path:
        return self.work / self.target.name


def _publish_files(pending: list[_Pending], overwrite: bool) -> None:
    """New targets first, each linked into place only if nothing is there (undone together on a failure), then
    the replacements: of a file this process published itself (a report saved after each section, a checkpoint
    after each epoch), or, with ``overwrite``, of a file whose owner is checked again."""
    own = {p.option for p in pending if (threading.get_ident(), _identity(p.target)) in _PUBLISHED}
    replace = [
        p
        for p in pending
        if p.option in own or (overwrite and (p.target.exists() or p.target.is_symlink()))
    ]
    linked: list[_Pending] = []
    try:
        for p in pending:
            if p in replace:
                continue
            st = os.stat(p.tmp)
            p.inode = (st.st_dev, st.st_ino)
            try:
                link_file(p.tmp, p.target)
            except FileExistsError:
                raise OutputError(
                    f"{p.option} {p.target}: a file appeared there while this command ran (another "
                    "run?); it is not replaced"
                    + ("" if overwrite else "; pass --overwrite to replace it")
                ) from None
            linked.append(p)
        for p in replace:
            if p.option in own:
                os.replace(p.tmp, p.target)
                continue
            try:
                check_owned_file(p.target, p.kind)
            except OwnershipError as exc:
                raise OutputError(f"{p.option} {p.target}: {exc}") from None
            if _identity(p.target) not in _ANNOUNCED:
                print(
                    f"warning: {p.option} {p.target}: replacing the file that appeared there while this command "
                    "ran (--overwrite)",
                    file=sys.stderr,
                )
            os.replace(p.tmp, p.target)
    except BaseException:
        for p in linked:  # take back only what this run published
            with contextlib.suppress(OSError):
                st = os.stat(p.target)
                if (st.st_dev, st.st_ino) == p.inode:
                    p.target.unlink()
        raise


@contextlib.contextmanager
def atomic_outputs(
    targets: Sequence[tuple[str, str | os.PathLike]],
    *,
    overwrite: bool = False,
    kinds: Mapping[str, FileKind] | None = None,
) -> Iterator[list[Path]]:
    """Yield a temporary path for each ``(option, path)``; only when every one was written are they published, and
    none replaces a file unless ``overwrite`` (and that file is a ``kinds[option]`` the tool wrote).

    An ``OSError`` (a full disk, a vanished folder) becomes :class:`OutputError` naming the user's path.
    """
    pending: list[_Pending] = []
    current = targets[0] if targets else ("output", "")
    try:
        for option, path in targets:
            current = (option, path)
            target = Path(path)
            if target.exists() and not target.is_file():
                raise OutputError(f"{option} {target}: exists and is not a regular file")
            pending.append(_Pending(option, target, (kinds or {}).get(option), make_work(target)))
        current = targets[0] if targets else current
        yield [p.tmp for p in pending]
        with interrupts_deferred():  # all files published, or none: never cut half-way
            _publish_files(pending, overwrite)
            _PUBLISHED.update((threading.get_ident(), _identity(p.target)) for p in pending)
    except OSError as exc:
        named = next(
            (p for p in pending if exc.filename and str(p.work) in str(exc.filename)), None
        )
        option, path = (named.option, named.target) if named else current
        raise OutputError(f"{option} {path}: could not write ({_reason(exc)})") from None
    finally:
        for p in pending:
            remove_work(p.work)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike,
    *,
    option: str = "output",
    overwrite: bool = False,
    kind: FileKind | None = None,
) -> Iterator[Path]:
    """Yield a temporary path for ``path``; on success it is published there (see :func:`atomic_outputs`), on
    failure it is removed."""
    with atomic_outputs(
        [(option, path)], overwrite=overwrite, kinds={option: kind} if kind else None
    ) as (tmp,):
        yield tmp


def write_text_atomic(
    path: str | os.PathLike,
    text: str,
    *,
    option: str = "output",
    overwrite: bool = False,
    kind: FileKind | None = None,
) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file fsynced, then published: :func:`atomic_output`)."""
    with atomic_output(path, option=option, overwrite=overwrite, kind=kind) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def cli_entry(main: Callable[[], int]) -> int:
    """Run a command line's ``main``; a closed stdout (``| head``) ends it quietly with status 0.

    SIGTERM ends it like an exception (status 143), so that temporary files are removed and worker
    processes stopped on the way out; Ctrl-C prints one line (status 130)."""
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
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
        if previous is not None:  # a caller running the command in-process keeps its own handler
            signal.signal(signal.SIGTERM, previous)
