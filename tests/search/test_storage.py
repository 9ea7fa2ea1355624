"""Optuna storages: normalisation, unreachable servers, studies tied to one problem."""
from __future__ import annotations

import time

import optuna
import pytest

from data_cache.synthetic import make_synthetic_cache
from search import ExitProblem, SearchError
from search.storage import (
    FINGERPRINT_ATTR,
    default_study_name,
    describe_storage,
    get_storage,
    is_shared,
    open_study,
    problem_fingerprint,
)


@pytest.fixture(autouse=True)
def _quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


def test_memory_and_objects():
    assert isinstance(get_storage(None), optuna.storages.InMemoryStorage)
    assert isinstance(get_storage("memory"), optuna.storages.InMemoryStorage)
    st = optuna.storages.InMemoryStorage()
    assert get_storage(st) is st
    assert not is_shared(None) and not is_shared("memory") and not is_shared(st)
    assert is_shared("sqlite:///x.db") and is_shared("run.log")


def test_sqlite_and_journal_files(tmp_path):
    db = tmp_path / "s.db"
    assert isinstance(get_storage(f"sqlite:///{db}"), optuna.storages.RDBStorage) and db.exists()
    for spec in (f"journal:///{tmp_path}/a.log", str(tmp_path / "b.log"), str(tmp_path / "c.journal")):
        assert isinstance(get_storage(spec), optuna.storages.JournalStorage)


@pytest.mark.parametrize("spec,match", [
    ("sqlite:////no/such/folder/s.db", "does not exist"),
    ("journal:///no/such/folder/j.log", "does not exist"),
    ("journal:", "needs a file"),
    ("my-study", "not understood"),
    (42, "storage must be"),
    ("nosuchdialect://x/y", "storage nosuchdialect://"),
])
def test_bad_storage(spec, match):
    with pytest.raises(SearchError, match=match):
        get_storage(spec)


def test_unreachable_postgres_fails_fast_and_hides_the_password():
    t0 = time.perf_counter()
    with pytest.raises(SearchError, match="cannot be reached") as info:
        get_storage("postgresql://user:secret@127.0.0.1:1/nodb", timeout=2)
    assert time.perf_counter() - t0 < 10
    assert "secret" not in str(info.value) and "***" in str(info.value)


def test_unroutable_postgres_times_out():
    """A host that never answers (TEST-NET-1, RFC 5737): the connect timeout ends the wait."""
    t0 = time.perf_counter()
    with pytest.raises(SearchError, match="cannot be reached"):
        get_storage("postgresql://user@192.0.2.1:5432/nodb", timeout=2)
    assert time.perf_counter() - t0 < 10


def test_describe_storage():
    assert describe_storage(None) == "memory"
    assert describe_storage("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert describe_storage("run.log") == "run.log"


def test_fingerprint_and_default_name(small_problem):
    fp = problem_fingerprint(small_problem, "quantile")
    assert fp == problem_fingerprint(small_problem, "quantile")
    assert fp != problem_fingerprint(small_problem, "float")
    assert fp != problem_fingerprint(small_problem.on_split("holdout"), "quantile")
    assert default_study_name(fp) == default_study_name(dict(fp)) != default_study_name(
        problem_fingerprint(small_problem, "float"))


def test_open_study_refuses_another_problem(tmp_path, small_problem):
    storage = get_storage(f"sqlite:///{tmp_path}/s.db")
    fp = problem_fingerprint(small_problem, "quantile")
    study = open_study(storage, "s", fp)
    assert study.user_attrs[FINGERPRINT_ATTR] == fp
    assert open_study(storage, "s", fp).study_name == "s"        # same problem: loads
    other = problem_fingerprint(ExitProblem(make_synthetic_cache(400, 3, n_head_types=2, seed=99)), "quantile")
    with pytest.raises(SearchError, match=r"study 's' .* another problem \(differs in .*cache"):
        open_study(storage, "s", other)
    with pytest.raises(SearchError, match="does not exist"):
        open_study(storage, "absent", fp, create=False)


def test_open_study_refuses_foreign_studies(tmp_path, small_problem):
    storage = get_storage(f"sqlite:///{tmp_path}/s.db")
    fp = problem_fingerprint(small_problem, "quantile")
    single = optuna.create_study(storage=storage, study_name="single")
    with pytest.raises(SearchError, match="other objectives"):
        open_study(storage, "single", fp)
    foreign = optuna.create_study(storage=storage, study_name="foreign", directions=["minimize", "minimize"])
    foreign.add_trial(optuna.trial.create_trial(values=[0.1, 0.2], params={}, distributions={}))
    with pytest.raises(SearchError, match="unknown problem"):
        open_study(storage, "foreign", fp)
    assert single.study_name == "single"
