"""Issue 20: a rerun on a shared optuna storage marks FAIL the trials a killed run left RUNNING, and says so in a
warning; trials of a run that is still alive (here or on another host) are left alone."""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import optuna
import pytest

from data_cache.synthetic import make_synthetic_cache
from search import Budget, ExitProblem, SearchWarning, create_engine
from search.storage import RUN_ATTR, get_storage, run_alive, run_record

ROOT = Path(__file__).resolve().parents[2]
RUNNING = (optuna.trial.TrialState.RUNNING,)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _study(storage: str, name: str):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=get_storage(storage))


def test_run_records():
    me = run_record()
    assert run_alive(me) and me["pid"] == os.getpid() and me["host"] == socket.gethostname()
    assert not run_alive(dict(me, pid=_dead_pid()))
    assert not run_alive(dict(me, start=(me["start"] or 0) + 1))         # the pid reused by another process
    assert run_alive(dict(me, host="elsewhere", pid=_dead_pid()))        # cannot be checked: never disturbed
    assert run_alive("junk")


def test_rerun_fails_the_running_trials_of_dead_runs_only(small_problem, tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    create_engine("optuna", storage=storage, study_name="d", sampler="random").run(
        small_problem, budget=Budget(max_evals=5), seed=0)
    study = _study(storage, "d")
    me = run_record()
    tags = {"dead pid": dict(me, pid=_dead_pid()), "reused pid": dict(me, start=(me["start"] or 0) + 1),
            "alive": me, "other host": dict(me, host="elsewhere"), "untagged": None}
    numbers = {}
    for what, record in tags.items():
        trial = study.ask()
        if record is not None:
            trial.set_user_attr(RUN_ATTR, record)
        numbers[what] = trial.number
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_engine("optuna", storage=storage, study_name="d", sampler="random").run(
            small_problem, budget=Budget(max_evals=5), seed=1)
    lines = [str(w.message) for w in caught if issubclass(w.category, SearchWarning)]
    assert len(lines) == 2 and all("1 trial left RUNNING by a run that is gone" in line and "marked FAIL" in line
                                   for line in lines), lines
    states = {t.number: t.state for t in _study(storage, "d").get_trials()}
    assert states[numbers["dead pid"]] == states[numbers["reused pid"]] == optuna.trial.TrialState.FAIL
    for what in ("alive", "other host", "untagged"):
        assert states[numbers[what]] == optuna.trial.TrialState.RUNNING, what
    with warnings.catch_warnings(record=True) as caught:                 # swept once: the next rerun is quiet
        warnings.simplefilter("always")
        create_engine("optuna", storage=storage, study_name="d", sampler="random").run(
            small_problem, budget=Budget(max_evals=2), seed=2)
    assert not [w for w in caught if issubclass(w.category, SearchWarning)]


def _n_running(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


@pytest.mark.slow
def test_a_killed_run_leaves_nothing_running_after_the_rerun(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    script = textwrap.dedent(f"""
        from data_cache.synthetic import make_synthetic_cache
        from search import Budget, ExitProblem, create_engine
        problem = ExitProblem(make_synthetic_cache(20000, 3, n_head_types=2, seed=11))
        create_engine("optuna", storage={storage!r}, study_name="k", sampler="nsga2", pop_size=200).run(
            problem, budget=Budget(max_evals=10**6))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and _n_running(tmp_path / "s.db") == 0:
            time.sleep(0.05)
        time.sleep(0.3)                                                    # into the batch of asked trials
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = _n_running(tmp_path / "s.db")
    assert left > 0                                                        # the kill left trials RUNNING
    problem = ExitProblem(make_synthetic_cache(20000, 3, n_head_types=2, seed=11))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_engine("optuna", storage=storage, study_name="k", sampler="random").run(
            problem, budget=Budget(max_evals=3))
    lines = [str(w.message) for w in caught if issubclass(w.category, SearchWarning)]
    assert len(lines) == 1 and f"left RUNNING by a run that is gone (pid {proc.pid} " in lines[0]
    running = _study(storage, "k").get_trials(states=RUNNING)
    assert len(running) <= 1 and not any(RUN_ATTR in t.user_attrs for t in running)   # killed between ask and tag
