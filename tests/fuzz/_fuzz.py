"""What the fuzz suites share: hypothesis settings, a command run in-process, snapshots of input folders.

``FUZZ`` is the default profile (derandomized: the same examples every run, so CI is reproducible);
``EXITSEARCH_FUZZ=long`` gives ten times the examples, new ones each run. ``fuzz_settings(n)`` scales a
suite's own example count the same way.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings

__all__ = ["LONG", "FUZZ", "fuzz_settings", "Run", "run_main", "snapshot"]

LONG = os.environ.get("EXITSEARCH_FUZZ") == "long"


def fuzz_settings(max_examples: int) -> settings:
    """``max_examples`` derandomized, or ten times as many new ones under ``EXITSEARCH_FUZZ=long``."""
    return settings(max_examples=max_examples * 10 if LONG else max_examples, derandomize=not LONG, deadline=None,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


FUZZ = fuzz_settings(12)


@dataclass
class Run:
    """What a command line did: its exit status and what it printed."""
    status: int | None
    out: str
    err: str


def run_main(main: Callable, argv: list[str]) -> Run:
    """``main(argv)`` in-process, stdout and stderr captured; argparse's ``SystemExit`` is its status. An
    exception escaping ``main`` (what a user would see as a traceback) is status None, its traceback on err."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
        except Exception:           # noqa: BLE001  (reported as the traceback it is)
            status = None
            traceback.print_exc()
    return Run(status, out.getvalue(), err.getvalue())


_DIGESTS: dict[tuple, str] = {}


def _digest(path: Path) -> str:
    """SHA-256 of a file's bytes, remembered per (path, inode, size, mtime, ctime): a write changes the ctime,
    which no program can set back, so a remembered digest is never stale."""
    try:
        st = path.stat()
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key not in _DIGESTS:
            _DIGESTS[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        return _DIGESTS[key]
    except OSError as exc:          # a link loop, a file nobody may read: its state is its error
        return type(exc).__name__


def snapshot(folders: Iterable[Path]) -> dict[str, tuple]:
    """Every name under ``folders`` with its kind, size and content hash (links by their target, not followed)."""
    state: dict[str, tuple] = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_symlink():
                state[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                state[str(p)] = ("dir",)
            else:
                state[str(p)] = ("file", p.stat().st_size, _digest(p))
    return state
