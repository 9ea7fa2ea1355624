"""Worker processes never outlive the run that started them, and leave no folder behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from data_cache.synthetic import write_synthetic_cache
from search.engines._workers import FOLDER_PREFIX, remove_orphaned_folders

ROOT = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_folders_of_dead_runs_are_removed_and_nothing_else(tmp_path):
    dead = tmp_path / f"{FOLDER_PREFIX}{_dead_pid()}-abc"
    live = tmp_path / f"{FOLDER_PREFIX}{os.getpid()}-abc"
    other = tmp_path / f"{FOLDER_PREFIX}notapid"
    for folder in (dead, live, other):
        folder.mkdir()
        (folder / "worker0.log").write_text("x")
    assert remove_orphaned_folders(str(tmp_path)) == [dead]
    assert not dead.exists() and live.exists() and other.exists()


def _workers_of(tmp: Path) -> list[int]:
    """Worker processes whose temporary directory is ``tmp`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"worker_main" in cmd and f"TMPDIR={tmp}".encode() in env.split(b"\0"):
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killing_the_search_stops_its_workers_and_removes_their_folder(tmp_path, sig):
    cache = write_synthetic_cache(tmp_path / "cache", 3000, 4, n_head_types=2, seed=3)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp))
    proc = subprocess.Popen([sys.executable, "-m", "search.pareto", str(cache.path), "--methods", "optuna",
                             "--workers", "2", "--storage", f"sqlite:///{tmp_path}/s.db", "--evaluations",
                             "100000000", "--sampler", "random", "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None and not _workers_of(tmp):
            time.sleep(0.2)
        workers = _workers_of(tmp)
        assert workers, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no worker started"
        assert list(tmp.glob(f"{FOLDER_PREFIX}*"))
        time.sleep(1.0)   # the worker is at work
    finally:
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # regression: the SystemExit of SIGTERM swallowed in sqlalchemy
            proc.kill()
            pytest.fail("the search did not stop within 60 s of the signal")
    if sig == signal.SIGTERM:  # stopped as asked: status 143, no traceback (regression: a half-told trial)
        assert proc.returncode == 143, err.decode()[-2000:]
        assert b"Traceback" not in err, err.decode()[-2000:]
    deadline = time.time() + 15
    while time.time() < deadline and (_workers_of(tmp) or list(tmp.glob(f"{FOLDER_PREFIX}*"))):
        time.sleep(0.2)
    assert _workers_of(tmp) == []
    assert list(tmp.glob(f"{FOLDER_PREFIX}*")) == []
    assert tempfile.gettempdir() != str(tmp)   # the test's own process kept its temporary directory


def test_a_worker_that_cannot_start_stops_the_others_and_leaves_no_folder(tmp_path, monkeypatch):
    """Regression: an error while starting the workers left those already started, their logs and the
    private folder to the garbage collector (``__exit__`` does not run when ``__enter__`` raises)."""
    from search.engines import _workers

    real_popen, started = subprocess.Popen, []

    def popen(*args, **kwargs):
        if started:
            raise OSError("no more processes")
        started.append(real_popen([sys.executable, "-c", "import time; time.sleep(60)"], **{
            k: v for k, v in kwargs.items() if k != "env"}))
        return started[-1]

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(_workers.subprocess, "Popen", popen)
    pool = _workers.WorkerPool([{}, {}], "time:sleep")
    with pytest.raises(OSError, match="no more processes"):
        pool.__enter__()
    assert started[0].poll() is not None and started[0].stdin.closed
    assert all(log.closed for log in pool.logs)
    assert not list(tmp_path.glob(f"{FOLDER_PREFIX}*"))
