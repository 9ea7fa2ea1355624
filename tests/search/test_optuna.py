"""The ``optuna`` engine: samplers, determinism, constraints, seeding, storages, workers, resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from data_cache.synthetic import make_synthetic_cache, write_synthetic_cache
from search import Budget, ExitProblem, SearchError, create_engine, run_search
from search.indicators import hypervolume
from search.storage import get_storage

ROOT = Path(__file__).resolve().parents[2]
COMPLETE = (optuna.trial.TrialState.COMPLETE,)


def _n_complete_sqlite(path: Path) -> int:
    """Complete trials in an SQLite storage, read without optuna (which would create the tables while
    another process is creating them)."""
    import sqlite3

    if not path.exists():
        return 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not created yet
        return 0
    finally:
        con.close()


def _complete(storage: str, name: str) -> list:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=get_storage(storage)).get_trials(states=COMPLETE)
    finally:
        optuna.logging.set_verbosity(level)


@pytest.fixture(scope="module")
def disk_cache(tmp_path_factory):
    """A small cache on disk (worker processes open it themselves)."""
    return write_synthetic_cache(tmp_path_factory.mktemp("cache") / "c", 1200, 3, n_head_types=2, seed=11)


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random"])
def test_deterministic_in_memory(small_problem, sampler):
    runs = [create_engine("optuna", sampler=sampler, pop_size=10).run(small_problem, budget=Budget(max_evals=40),
                                                                      seed=s) for s in (5, 5, 6)]
    a, b, c = runs
    assert a.configs == b.configs and np.array_equal(a.F, b.F)
    assert not (a.configs == c.configs and np.array_equal(a.F, c.F))
    assert a.n_evals == 40 and "40 complete trials" in a.message
    np.testing.assert_allclose(small_problem.evaluate(a.configs), a.F, rtol=0, atol=1e-12)


def test_constraints_hold_and_reach_the_sampler(small_problem):
    base = small_problem.base
    engine = create_engine("optuna", sampler="nsga2", pop_size=10, max_drop=0.02, max_cost=0.9)
    front = engine.run(small_problem, budget=Budget(max_evals=60), seed=0)
    assert len(front) > 0
    F = small_problem.evaluate(front.configs)
    assert np.all(1 - F[:, 0] >= base.accuracy - 0.02 - 1e-12) and np.all(F[:, 1] <= 0.9 + 1e-12)


def test_seed_with_dp_enqueues_the_exact_dp_front(small_problem):
    dp = run_search(small_problem, "dp")
    engine = create_engine("optuna", sampler="random", seed_with_dp=True)
    front = engine.run(small_problem, budget=Budget(max_evals=len(dp) + 5), seed=0)
    assert "dp configurations enqueued" in front.message
    assert hypervolume(front.F) >= hypervolume(dp.F) - 1e-12


def test_sampler_object_and_params(small_problem):
    engine = create_engine("optuna", sampler=optuna.samplers.RandomSampler(seed=1), storage="memory")
    front = engine.run(small_problem, budget=Budget(max_evals=20))
    assert front.params["sampler"] == "RandomSampler"
    json.dumps(front.params)
    evals, hv = zip(*engine.history_, strict=True)
    assert evals[-1] == 20 and np.all(np.diff(hv) >= 0)


@pytest.mark.parametrize("opts,match", [
    ({"sampler": "cmaes"}, "unknown sampler 'cmaes'"),
    ({"sampler": 3}, "unknown sampler"),
    ({"workers": 0}, "workers"),
    ({"workers": 2}, "needs a shared storage"),
    ({"workers": 2, "storage": "sqlite:///{tmp}/s.db"}, "needs a cache on disk"),
    ({"encoding": "grid"}, "unknown encoding"),
    ({"max_drop": -1}, "max_drop"),
    ({"storage": "postgresql://u:pw@127.0.0.1:1/db"}, "cannot be reached"),
])
def test_bad_input(small_problem, tmp_path, opts, match):
    opts = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in opts.items()}
    t0 = time.perf_counter()
    with pytest.raises(SearchError, match=match):
        create_engine("optuna", **opts).run(small_problem, budget=Budget(max_evals=5))
    assert time.perf_counter() - t0 < 10


def test_zero_budget(small_problem):
    with pytest.raises(SearchError, match="evaluation budget"):
        create_engine("optuna").run(small_problem, budget=Budget(max_evals=0))


def test_study_of_another_problem_is_refused(small_problem, saver_cache, tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    create_engine("optuna", storage=storage, study_name="s").run(small_problem, budget=Budget(max_evals=5))
    with pytest.raises(SearchError, match="was made for another problem"):
        create_engine("optuna", storage=storage, study_name="s").run(ExitProblem(saver_cache),
                                                                     budget=Budget(max_evals=5))
    with pytest.raises(SearchError, match="differs in encoding"):
        create_engine("optuna", storage=storage, study_name="s", encoding="float").run(
            small_problem, budget=Budget(max_evals=5))


def test_runs_accumulate_in_one_study(small_problem, tmp_path):
    """A second run loads the study: its result covers every complete trial, earlier ones included."""
    storage = str(tmp_path / "study.log")                                   # journal file
    first = create_engine("optuna", storage=storage, sampler="random").run(small_problem,
                                                                           budget=Budget(max_evals=15), seed=0)
    second = create_engine("optuna", storage=storage, sampler="random").run(small_problem,
                                                                            budget=Budget(max_evals=10), seed=1)
    assert second.n_evals == 10 and "25 complete trials" in second.message
    assert hypervolume(second.F) >= hypervolume(first.F)
    assert len(_complete(storage, first.message.split("'")[1])) == 25       # the default study name


@pytest.mark.slow
@pytest.mark.parametrize("samples", [None, "subsample"])
def test_two_workers_on_one_sqlite_study(disk_cache, tmp_path, samples):
    """Also on a problem fitted on a subsample: the worker rebuilds the same one (same fingerprint)."""
    storage = f"sqlite:///{tmp_path}/s.db"
    indices = None if samples is None else np.sort(np.random.default_rng(0).choice(600, 250, replace=False))
    problem = ExitProblem(disk_cache, samples=indices)
    engine = create_engine("optuna", storage=storage, study_name="w", workers=2, sampler="nsga2", pop_size=8)
    front = engine.run(problem, budget=Budget(max_evals=40), seed=0)
    trials = _complete(storage, "w")
    assert front.n_evals == 40 and len(trials) == 40                       # every trial of both workers landed
    assert len({t.number for t in trials}) == 40 and "(2 workers)" in front.message
    assert hypervolume(front.F) == pytest.approx(hypervolume(np.array([t.values for t in trials])))


@pytest.mark.slow
def test_resume_after_a_kill(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    script = textwrap.dedent(f"""
        from data_cache.synthetic import make_synthetic_cache
        from search import Budget, ExitProblem, create_engine
        problem = ExitProblem(make_synthetic_cache(1200, 3, n_head_types=2, seed=11))
        create_engine("optuna", storage={storage!r}, study_name="r", sampler="random").run(
            problem, budget=Budget(max_evals=10**6))
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    n_before = 0
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and n_before < 20:
            time.sleep(0.5)
            n_before = _n_complete_sqlite(tmp_path / "s.db")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert n_before >= 20, proc.stderr.read().decode()[-2000:]
    killed = {t.number: t.values for t in _complete(storage, "r")}
    problem = ExitProblem(make_synthetic_cache(1200, 3, n_head_types=2, seed=11))
    front = create_engine("optuna", storage=storage, study_name="r", sampler="random").run(
        problem, budget=Budget(max_evals=10), seed=1)
    after = {t.number: t.values for t in _complete(storage, "r")}
    assert all(after[n] == v for n, v in killed.items())                    # nothing finished was lost
    assert len(after) == len(killed) + 10 and front.n_evals == 10
    assert f"{len(after)} complete trials" in front.message


@pytest.mark.postgres
def test_postgresql_storage(small_problem, saver_cache):
    url = os.environ.get("EXITSEARCH_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("EXITSEARCH_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and sets it)")
    name = f"pg-{os.getpid()}-{time.time_ns()}"
    first = create_engine("optuna", storage=url, study_name=name, sampler="nsga2", pop_size=8).run(
        small_problem, budget=Budget(max_evals=16), seed=0)
    second = create_engine("optuna", storage=url, study_name=name, sampler="nsga2", pop_size=8).run(
        small_problem, budget=Budget(max_evals=8), seed=1)
    assert first.n_evals == 16 and "24 complete trials" in second.message
    assert len(_complete(url, name)) == 24
    with pytest.raises(SearchError, match="another problem"):
        create_engine("optuna", storage=url, study_name=name).run(ExitProblem(saver_cache),
                                                                  budget=Budget(max_evals=2))


def test_default_sampler_is_optunas_multi_objective_default(small_problem):
    """NSGA-II, as Optuna itself picks for multi-objective studies; trials asked a population at a time."""
    from search.engines.optuna_engine import _make_sampler
    engine = create_engine("optuna", pop_size=10)
    assert engine.get_params()["sampler"] == "nsga2"
    assert isinstance(_make_sampler(optuna, engine.sampler, 0, 10), optuna.samplers.NSGAIISampler)
    front = engine.run(small_problem, budget=Budget(max_evals=30), seed=0)
    assert front.n_evals == 30 and len(front) > 0
