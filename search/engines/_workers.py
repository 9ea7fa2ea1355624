"""Worker processes of an engine, tied to the process that started them.

``WorkerPool`` starts each worker with ``python -c`` (no ``__main__`` guard needed) in a private folder
named after the starting process (``exitsearch-workers-<pid>-*`` in the temporary directory), sends it
its JSON spec as the first line of its stdin and keeps that pipe open. A worker calls
:func:`read_spec_and_watch_parent`: when the pipe closes without the pool saying goodbye (the starting
process was killed, even with SIGKILL), the worker stops its work in its own Python code (so an
interrupted batch is cleaned up as usual), removes the private folder and exits; it never runs on alone.
Folders left by starting processes that no longer exist (killed before anything could clean up) are
removed when the next pool starts.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .._validation import SearchError

__all__ = ["WorkerPool", "read_spec_and_watch_parent", "FOLDER_PREFIX"]

FOLDER_PREFIX = "exitsearch-workers-"
GRACE_SECONDS = (
    5.0  # after its parent is gone, a worker stuck outside Python code is ended this much later
)
_GOODBYE = "done\n"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_orphaned_folders(tmp: str | None = None) -> list[Path]:
    """Remove ``exitsearch-workers-<pid>-*`` folders whose starting process no longer exists; those removed."""
    removed = []
    for folder in Path(tmp or tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        pid = folder.name[len(FOLDER_PREFIX) :].split("-", 1)[0]
        if folder.is_dir() and not folder.is_symlink() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextlib.contextmanager
def _private_folder() -> Iterator[str]:
    remove_orphaned_folders()
    folder = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class WorkerPool:
    """Worker processes running ``entry`` (``"module:function"``, a function that returns an exit status)
    on one spec each; use as a context manager. Each spec gains ``result``: the file its worker writes;
    ``label`` names a worker in errors."""

    def __init__(self, specs: list[dict], entry: str, *, label: str = "worker"):
        self.specs, self.entry, self.label = specs, entry, label
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []

    def __enter__(self) -> WorkerPool:
        if not self.specs:
            return self
        self._folder_cm = _private_folder()
        folder = self._folder_cm.__enter__()
        module, function = self.entry.split(":")
        code = f"import sys; from {module} import {function}; sys.exit({function}())"
        root = str(
            Path(__file__).resolve().parents[2]
        )  # the folder holding search/ and data_cache/
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
        )
        try:
            for i, spec in enumerate(self.specs):
                spec["result"] = os.path.join(folder, f"worker{i}.json")
                log = open(os.path.join(folder, f"worker{i}.log"), "w+")
                self.logs.append(log)
                proc = subprocess.Popen(
                    [sys.executable, "-c", code],
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    text=True,
                )
                self.procs.append(proc)
                assert proc.stdin is not None  # stdin=PIPE
                proc.stdin.write(json.dumps(spec) + "\n")
                proc.stdin.flush()
        except (
            BaseException
        ):  # a worker that could not start: stop those started, remove the folder
            self.__exit__()
            raise
        return self

    def join(self) -> list:
        """Wait for every worker; the results they wrote. A failed worker raises SearchError."""
        results = []
        for i, (proc, spec, log) in enumerate(zip(self.procs, self.specs, self.logs, strict=True)):
            if proc.wait() != 0:
                log.seek(0)
                lines = [ln for ln in log.read().strip().splitlines() if ln.strip()]
                raise SearchError(
                    f"{self.label} {i + 1} failed (exit {proc.returncode}): "
                    f"{lines[-1] if lines else 'no output'}"
                )
            results.append(json.loads(Path(spec["result"]).read_text()))
        return results

    def __exit__(self, *exc) -> None:
        """Stop workers still running (after an error here), say goodbye, close the logs, remove the folder."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdin is None:
                continue
            with contextlib.suppress(OSError):
                proc.stdin.write(_GOODBYE)
            with contextlib.suppress(
                OSError
            ):  # closes the pipe even when the goodbye found it broken
                proc.stdin.close()
        for log in self.logs:
            log.close()
        if self.specs:
            self._folder_cm.__exit__(None, None, None)


def read_spec_and_watch_parent() -> dict:
    """In a worker: its spec (the first line of stdin), and a watcher that ends the worker once the
    starting process is gone (stdin closes without a goodbye)."""
    spec = json.loads(sys.stdin.readline())
    folder = os.path.dirname(spec["result"])

    def watch() -> None:
        if sys.stdin.readline() == _GOODBYE:
            return
        shutil.rmtree(folder, ignore_errors=True)
        _thread.interrupt_main()  # KeyboardInterrupt in the worker's own code: its cleanup runs
        timer = threading.Timer(GRACE_SECONDS, os._exit, (3,))
        timer.daemon = True
        timer.start()

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()
    return spec
