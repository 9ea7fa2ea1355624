"""Optuna storages for the ``optuna`` engine: one normaliser, and studies tied to one problem.

``get_storage`` accepts ``None`` or ``"memory"`` (in this process only), ``sqlite:///FILE``, a
journal file (``journal:///PATH``, or a path ending in ``.log``/``.journal``), a
``postgresql://user:pass@host:port/db`` URL (any other SQLAlchemy URL goes to optuna's
``RDBStorage`` too) or an optuna ``BaseStorage`` object. A server that cannot be reached raises
SearchError within ``timeout`` seconds instead of hanging.

A study remembers which problem it searches: ``open_study`` stores a fingerprint (cache, split,
score kind, cost measure, positions and their exits, encoding, a digest of the scores and costs)
in the study's user attributes and refuses to continue a study made for another problem.

A run on a shared storage tags each trial it asks with its run (host, pid, process start time: ``run_record``),
so a rerun can tell the RUNNING trials of a killed run, which nothing would ever finish, from those of a run still
alive (here or on another host): ``open_study`` marks the former FAIL and says so in a warning; the others are
left alone (so is a trial of a run killed between asking it and tagging it: one storage write apart).
optuna is imported lazily.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import warnings
from pathlib import Path

import numpy as np

from data_cache.fingerprint import digest_arrays

from ._validation import SearchError, SearchWarning

__all__ = [
    "JOURNAL_SUFFIXES",
    "get_storage",
    "describe_storage",
    "is_shared",
    "problem_fingerprint",
    "default_study_name",
    "open_study",
    "FINGERPRINT_ATTR",
    "RUN_ATTR",
    "run_record",
    "run_alive",
    "fail_dead_trials",
]

JOURNAL_SUFFIXES = (".log", ".journal")
FINGERPRINT_ATTR = "exitsearch"
RUN_ATTR = "exitsearch-run"  # the trial user attribute naming the run that asked it
_MEMORY = ("memory", ":memory:")


def _optuna():
    try:
        import optuna
    except ModuleNotFoundError:
        raise SearchError("engine 'optuna' needs optuna: pip install optuna") from None
    return optuna


def _journal_path(storage: str) -> str | None:
    """The file of a journal storage string, or None if ``storage`` names no journal."""
    if storage.startswith("journal:"):
        rest = storage[len("journal:") :]
        return rest[2:] if rest.startswith("//") else rest
    if "://" not in storage and storage.endswith(JOURNAL_SUFFIXES):
        return storage
    return None


def describe_storage(storage) -> str:
    """A printable name of a storage, passwords hidden."""
    if storage is None or (isinstance(storage, str) and storage in _MEMORY):
        return "memory"
    if not isinstance(storage, str):
        return type(storage).__name__
    if _journal_path(storage) is not None or "://" not in storage:
        return storage
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show the scheme only
        return storage.split("://", 1)[0] + "://..."


def is_shared(storage) -> bool:
    """Whether several processes can use ``storage`` (a string naming a file or a server)."""
    return isinstance(storage, str) and storage not in _MEMORY and storage != "sqlite://"


def get_storage(storage=None, *, timeout: float = 5.0):
    """An optuna ``BaseStorage`` for ``storage`` (see module docstring); SearchError if unusable."""
    optuna = _optuna()
    if storage is None or (isinstance(storage, str) and storage in _MEMORY):
        return optuna.storages.InMemoryStorage()
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if not isinstance(storage, str) or not storage:
        raise SearchError(
            f"storage must be 'memory', sqlite:///FILE, journal:///FILE or a database URL "
            f"(got {storage!r})"
        )
    path = _journal_path(storage)
    if path is not None:
        return _journal(optuna, path)
    if "://" not in storage:
        raise SearchError(
            f"storage {storage!r} is not understood; use 'memory', sqlite:///FILE, "
            f"journal:///FILE (or FILE{JOURNAL_SUFFIXES[0]}) or postgresql://USER:PASS@HOST/DB"
        )
    return _rdb(optuna, storage, timeout)


def _journal(optuna, path: str):
    if not path:
        raise SearchError("journal storage needs a file: journal:///PATH/TO/FILE.log")
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise SearchError(
            f"journal storage {path}: folder {parent} does not exist; create it first"
        )
    from optuna.storages.journal import JournalFileBackend

    try:
        return optuna.storages.JournalStorage(JournalFileBackend(str(Path(path).expanduser())))
    except OSError as exc:
        raise SearchError(f"journal storage {path}: {exc.strerror or exc}") from None


def _postgres_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed (SQLAlchemy 2.1 assumes psycopg 3)."""
    scheme, rest = url.split("://", 1)
    if scheme.lower() not in ("postgresql", "postgres"):
        return url
    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}://{rest}"
    return f"postgresql://{rest}"


def _rdb(optuna, url: str, timeout: float):
    import sqlalchemy.event
    import sqlalchemy.exc

    name = describe_storage(url)
    url = _postgres_driver(url)
    scheme = url.split("://", 1)[0].split("+")[0].lower()
    connect_args: dict = {}
    if scheme == "sqlite":
        file = url[len("sqlite:///") :].split("?", 1)[0] if url.startswith("sqlite:///") else ""
        if file and not Path(file).expanduser().resolve().parent.is_dir():
            raise SearchError(
                f"storage {url}: folder {Path(file).resolve().parent} does not exist; create it first"
            )
        connect_args["timeout"] = 60  # seconds to wait for another worker's write lock
    elif scheme in ("postgresql", "postgres", "mysql"):
        connect_args["connect_timeout"] = max(1, int(round(timeout)))
    engine_kwargs = {"connect_args": connect_args, "pool_pre_ping": True} if connect_args else {}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError as exc:
        driver = {
            "postgresql": "psycopg2-binary",
            "postgres": "psycopg2-binary",
            "mysql": "pymysql",
        }.get(scheme)
        hint = f": pip install {driver}" if driver else ""
        raise SearchError(
            f"storage {name}: the database driver is missing{hint} ({exc.__cause__ or exc})"
        ) from None
    except sqlalchemy.exc.ArgumentError as exc:
        raise SearchError(f"storage {name}: not a valid database URL ({exc})") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise SearchError(
            f"storage {name} cannot be reached (timeout {timeout:g} s): {reason}"
        ) from None
    if scheme == "sqlite":
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()  # connections opened from now on get the pragmas
    return storage


def _sqlite_pragmas(connection, _record) -> None:
    """Write-ahead log: readers never block the writer; a killed process loses no committed trial."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def problem_fingerprint(problem, encoding: str) -> dict:
    """What identifies a search problem: a study continues only on an equal fingerprint."""
    cache = problem.cache
    data = digest_arrays(
        {
            "scores": problem.scores,
            "correct": problem.correct,
            "unit_costs": np.asarray(problem.costs.unit_costs),
            "needs": np.asarray(problem.costs.needs),
        }
    )
    fp = {
        "format": "exitsearch-study/1",
        "cache": str(getattr(cache, "fingerprint", "")),
        "split": problem.split,
        "score": problem.score,
        "objective": problem.objective,
        "n_samples": int(problem.n_samples),
        "positions": [int(p) for p in problem.positions],
        "exits": [[cache.exits[e].name for e in ex] for ex in problem.position_exits],
        "encoding": encoding,
        "data": data,
    }
    return json.loads(json.dumps(fp))


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), None if there is no such process; -1 where
    /proc is missing but the process exists (the pid alone then says whether it lives)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(
            stat[stat.rindex(")") + 2 :].split()[19]
        )  # field 22, after the command name in parentheses
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass
    return -1


def run_record() -> dict:
    """This process as a run: host, pid and start time (a reused pid has another start time)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def run_alive(record) -> bool:
    """Whether the run ``record`` (a :func:`run_record`) may still be running: always True for another host or a
    malformed record (it cannot be checked from here, so it is never disturbed)."""
    if (
        not isinstance(record, dict)
        or record.get("host") != socket.gethostname()
        or not isinstance(record.get("pid"), int)
    ):
        return True
    start = _process_start(record["pid"])
    return start is not None and (
        start == -1 or record.get("start") in (None, -1) or start == record.get("start")
    )


def fail_dead_trials(study) -> list[str]:
    """Mark FAIL the RUNNING trials of ``study`` whose run is dead (:func:`run_alive`); one line per dead run."""
    optuna = _optuna()
    dead: dict[tuple, list[int]] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        record = t.user_attrs.get(RUN_ATTR)
        if record is not None and not run_alive(record):
            dead.setdefault((record.get("host"), record.get("pid")), []).append(t.number)
    lines = []
    for (host, pid), numbers in dead.items():
        for n in numbers:
            try:
                study.tell(n, state=optuna.trial.TrialState.FAIL)
            except (ValueError, RuntimeError):  # finished meanwhile by someone else
                pass
        lines.append(
            f"study {study.study_name!r}: {len(numbers)} trial{'s' if len(numbers) > 1 else ''} left "
            f"RUNNING by a run that is gone (pid {pid} on {host}) marked FAIL"
        )
    return lines


def default_study_name(fingerprint: dict) -> str:
    """A study name derived from the fingerprint: the same problem resumes the same study."""
    blob = json.dumps(fingerprint, sort_keys=True).encode()
    return "exitsearch-" + hashlib.sha256(blob).hexdigest()[:12]


def open_study(
    storage, study_name: str | None, fingerprint: dict, *, sampler=None, create: bool = True
):
    """Create or load the two-objective study ``study_name`` in ``storage`` (an optuna storage).

    A study already holding trials of another problem, or created for other directions, is refused.
    ``create=False`` only loads (worker processes).
    """
    optuna = _optuna()
    directions = ["minimize", "minimize"]
    where = describe_storage(storage)
    try:
        if create:
            study = optuna.create_study(
                storage=storage,
                sampler=sampler,
                study_name=study_name,
                directions=directions,
                load_if_exists=True,
            )
        else:
            study = optuna.load_study(storage=storage, sampler=sampler, study_name=study_name)
    except KeyError:
        raise SearchError(f"study {study_name!r} does not exist in {where}") from None
    if [d.name.lower() for d in study.directions] != directions:
        raise SearchError(
            f"study {study.study_name!r} in {where} was created for other objectives "
            f"({[d.name.lower() for d in study.directions]}); choose another study name"
        )
    stored = study.user_attrs.get(FINGERPRINT_ATTR)
    if stored is None:
        if study.get_trials(deepcopy=False):
            raise SearchError(
                f"study {study.study_name!r} in {where} holds trials of an unknown problem; "
                "choose another study name"
            )
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
    elif stored != fingerprint:
        diff = sorted(
            k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k)
        )
        raise SearchError(
            f"study {study.study_name!r} in {where} was made for another problem (differs in "
            f"{', '.join(diff)}); choose another study name or storage"
        )
    if create:
        for line in fail_dead_trials(study):
            warnings.warn(SearchWarning(line), stacklevel=2)
    return study
