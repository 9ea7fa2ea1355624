"""Optuna multi-objective study on the mixed encoding of :mod:`search.encoding` (engine ``optuna``).

Akiba et al., "Optuna: A Next-generation Hyperparameter Optimization Framework", KDD 2019; optuna
is imported lazily. Per position a categorical ``head_<p>`` (``"none"`` or an exit name) and a
float ``thr_<p>`` (float encoding) or ``q_<p>`` (quantile encoding), ``p`` the cache position; the
search space is fixed, so every sampler applies. Trials are asked in batches, evaluated together
with ``ExitProblem.evaluate_arrays`` and told back. Constraints (maximum drop, maximum relative
cost) reach the sampler through ``Trial.set_constraint`` (Optuna 5's replacement of the deprecated
``constraints_func``; TPE and NSGA-II samplers read both the same way). With a shared storage (SQLite, journal file,
PostgreSQL) several worker processes, and several machines running the same command with the same
storage and study name, fill one study; a killed run resumes it and keeps every finished trial.
The result is built from every COMPLETE trial of the study (earlier runs and other workers included).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np

from .._validation import SearchError, SearchWarning, check_scalar
from ..budget import Budget
from ..encoding import MixedEncoding, check_constraints, constraint_values
from ..front import non_dominated
from ..indicators import hypervolume
from ..storage import (
    RUN_ATTR,
    default_study_name,
    describe_storage,
    get_storage,
    is_shared,
    open_study,
    problem_fingerprint,
    run_record,
)
from . import register_engine
from ._base import BaseEngine, Candidates
from ._population import base_within_constraints, dp_front, import_optional
from ._workers import WorkerPool, read_spec_and_watch_parent

__all__ = ["OptunaEngine", "SAMPLERS", "TPE_TRIALS_WARN", "worker_main"]

SAMPLERS = ("nsga2", "tpe", "random")
DEFAULT_TRIALS = 500
# TPE scans every earlier trial on each ask (and multivariate TPE refits its densities): on this
# problem it ran about 2,000 trials a minute at the start and far fewer after a few thousand
TPE_TRIALS_WARN = 2_000


@contextlib.contextmanager
def _quiet(optuna):
    """No per-trial INFO lines and no ExperimentalWarnings while the engine runs."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


class _Space:
    """Optuna parameter names and distributions of a :class:`MixedEncoding`; trial params <-> (H, X)."""

    def __init__(self, enc: MixedEncoding):
        self.enc = enc
        lo, hi = enc.x_bounds
        prefix = "thr" if enc.kind == "float" else "q"
        self.head_names = [f"head_{p}" for p in enc.problem.positions]
        self.x_names = [f"{prefix}_{p}" for p in enc.problem.positions]
        self.choices = [enc.choice_names(j) for j in range(enc.n_positions)]
        self.bounds = list(zip(lo.tolist(), hi.tolist(), strict=True))

    def suggest(self, trial) -> tuple[np.ndarray, np.ndarray]:
        J = self.enc.n_positions
        h, x = np.zeros(J, dtype=np.int64), np.zeros(J)
        for j in range(J):
            h[j] = self.choices[j].index(
                trial.suggest_categorical(self.head_names[j], self.choices[j])
            )
            x[j] = trial.suggest_float(self.x_names[j], *self.bounds[j])
        return h, x

    def from_params(self, params_list) -> tuple[np.ndarray, np.ndarray]:
        H = np.array(
            [
                [self.choices[j].index(p[self.head_names[j]]) for j in range(self.enc.n_positions)]
                for p in params_list
            ],
            dtype=np.int64,
        ).reshape(-1, self.enc.n_positions)
        X = np.array([[p[n] for n in self.x_names] for p in params_list], dtype=float).reshape(
            H.shape
        )
        return H, X

    def to_params(self, H: np.ndarray, X: np.ndarray) -> list[dict]:
        return [
            {
                **{n: self.choices[j][int(h[j])] for j, n in enumerate(self.head_names)},
                **{n: float(np.clip(x[j], *self.bounds[j])) for j, n in enumerate(self.x_names)},
            }
            for h, x in zip(H, X, strict=True)
        ]


def _make_sampler(optuna, sampler, seed: int, pop_size: int):
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return sampler
    if sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=pop_size)
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SearchError(
        f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)} or pass an optuna BaseSampler"
    )


def _optimize(
    study,
    space: _Space,
    problem,
    budget: Budget,
    *,
    n_trials: int | None,
    batch_size: int,
    max_drop,
    max_cost,
    on_batch=None,
    run: dict | None = None,
) -> list[int]:
    """Ask, evaluate and tell trials in batches until the budget or ``n_trials``; the told trial numbers.
    ``run``: the record each asked trial is tagged with (a shared storage), so a rerun can tell if it died."""
    optuna = import_optional("optuna", "optuna", "optuna")
    base_error = problem.base.error
    told: list[int] = []
    while (n_trials is None or len(told) < n_trials) and not budget.exhausted(problem):
        k = int(
            min(
                batch_size,
                budget.evals_left(problem),
                math.inf if n_trials is None else n_trials - len(told),
            )
        )
        trials, n_told = [], 0
        try:
            for _ in range(k):
                trials.append(study.ask())
                if run is not None:
                    trials[-1].set_user_attr(RUN_ATTR, run)
            rows = [space.suggest(t) for t in trials]
            H, X = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
            F = space.enc.evaluate(H, X)
            G = constraint_values(F, base_error, max_drop=max_drop, max_cost=max_cost)
            names = [
                n for n, v in (("max_drop", max_drop), ("max_cost", max_cost)) if v is not None
            ]
            for i, t in enumerate(trials):
                for name, g in zip(names, G[i], strict=True):
                    t.set_constraint(name, float(g))
                study.tell(t, F[i].tolist())
                told.append(t.number)
                n_told = i + 1
        finally:  # interrupted: asked trials that were not told are marked failed, never left running
            for t in trials[n_told:]:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
        if on_batch is not None:
            on_batch()
    return told


def _worker(spec: dict) -> list[int]:
    """One extra worker: open the cache itself, load the study, optimise its share; the told trial numbers."""
    from data_cache import open_cache

    from ..costs import cost_table
    from ..problem import ExitProblem

    optuna = import_optional("optuna", "optuna", "optuna")
    with _quiet(optuna):
        cache = open_cache(spec["cache_path"], skip_integrity_check=True)
        costs = cost_table(
            cache, spec["objective"], table=spec["cost_table"], batch_size=spec["cost_batch_size"]
        )
        problem = ExitProblem(
            cache,
            spec["split"],
            objective=spec["objective"],
            score=spec["score"],
            costs=costs,
            samples=spec["samples"],
        )  # the data digest is checked below
        fp = problem_fingerprint(problem, spec["encoding"])
        sampler = _make_sampler(optuna, spec["sampler"], spec["seed"], spec["pop_size"])
        study = open_study(
            get_storage(spec["storage"]), spec["study_name"], fp, sampler=sampler, create=False
        )
        seconds = None if spec["deadline"] is None else spec["deadline"] - time.time()
        if seconds is not None and seconds <= 0:
            return []
        budget = Budget(max_evals=spec["max_evals"], max_seconds=seconds).start(problem)
        return _optimize(
            study,
            _Space(MixedEncoding(problem, spec["encoding"])),
            problem,
            budget,
            n_trials=spec["n_trials"],
            batch_size=spec["batch_size"],
            max_drop=spec["max_drop"],
            max_cost=spec["max_cost"],
            run=run_record(),
        )


def _table_name(costs) -> str | None:
    """The measured table a time objective reads (None for the cache's own cost models)."""
    model = getattr(costs, "model", None)
    return None if model is None else model.table.name


def worker_main() -> int:
    """Entry of a worker process (``WorkerPool``): the told trial numbers go to ``spec['result']``."""
    spec = read_spec_and_watch_parent()
    numbers = _worker(spec)
    Path(spec["result"]).write_text(json.dumps(numbers))
    return 0


def _shares(total: int | None, n: int) -> list[int | None]:
    """``total`` split into ``n`` near-equal integer shares (None stays None)."""
    if total is None:
        return [None] * n
    return [total // n + (i < total % n) for i in range(n)]


@register_engine
class OptunaEngine(BaseEngine):
    """A two-objective optuna study (see module docstring).

    Options: ``sampler`` ``'nsga2'`` (default: Optuna's own default for multi-objective studies),
    ``'tpe'`` (multivariate TPE; a :class:`SearchWarning` when asked for more than ``TPE_TRIALS_WARN``
    trials, which take long), ``'random'`` or any optuna ``BaseSampler``; ``storage`` (None/``'memory'``,
    ``sqlite:///FILE``, ``journal:///FILE`` or ``FILE.log``, ``postgresql://...``); ``study_name`` (default for
    a shared storage: derived from the problem, so the same problem resumes the same study); ``workers``
    processes (> 1 needs a shared storage and a cache on disk); ``encoding``; ``max_drop``/``max_cost``
    constraints as in ``nsga2``; ``seed_with_dp`` enqueues dp's front; ``pop_size`` (NSGA-II sampler population);
    ``batch_size`` trials asked per evaluation call (default: ``pop_size`` for NSGA-II, else 1);
    ``n_trials`` per run (None: until the budget; with no budget either, 500). ``history_`` holds
    ``(evaluations of this run, hypervolume of the study's feasible front)``.
    """

    name = "optuna"

    def __init__(
        self,
        *,
        sampler="nsga2",
        storage=None,
        study_name: str | None = None,
        workers: int = 1,
        encoding: str = "quantile",
        max_drop: float | None = None,
        max_cost: float | None = None,
        seed_with_dp: bool = False,
        pop_size: int = 50,
        batch_size: int | None = None,
        n_trials: int | None = None,
    ):
        self.sampler = sampler
        self.storage = storage
        self.study_name = study_name
        self.workers = workers
        self.encoding = encoding
        self.max_drop = max_drop
        self.max_cost = max_cost
        self.seed_with_dp = seed_with_dp
        self.pop_size = pop_size
        self.batch_size = batch_size
        self.n_trials = n_trials

    def get_params(self) -> dict:
        """As the base class, with a sampler object named by its class (JSON-ready)."""
        params = super().get_params()
        if not isinstance(self.sampler, str):
            params["sampler"] = type(self.sampler).__name__
        if self.storage is not None:
            params["storage"] = describe_storage(self.storage)
        return params

    def _base_only(self, problem) -> Candidates:
        return base_within_constraints(
            super()._base_only(problem), problem, self.max_drop, self.max_cost
        )

    def _check(self, problem) -> None:
        if isinstance(self.sampler, str) and self.sampler not in SAMPLERS:
            raise SearchError(
                f"unknown sampler {self.sampler!r}; choose one of {list(SAMPLERS)} "
                "or pass an optuna BaseSampler"
            )
        check_scalar(self.workers, "workers", min_val=1, integer=True)
        check_scalar(self.pop_size, "pop_size", min_val=2, integer=True)
        for name in ("batch_size", "n_trials"):
            if getattr(self, name) is not None:
                check_scalar(getattr(self, name), name, min_val=1, integer=True)
        check_constraints(self.max_drop, self.max_cost)
        if self.workers > 1:
            if not is_shared(self.storage):
                raise SearchError(
                    f"workers={self.workers} needs a shared storage (sqlite:///FILE, journal:///FILE "
                    "or postgresql://...), not memory"
                )
            if getattr(problem.cache, "path", None) is None:
                raise SearchError(
                    f"workers={self.workers} needs a cache on disk (each worker opens it); "
                    "this cache lives in memory: use workers=1"
                )
            if not isinstance(self.sampler, str):
                raise SearchError(
                    f"workers={self.workers} needs the sampler by name ({list(SAMPLERS)})"
                )

    def _run(self, problem, budget, rng, callback):
        self._check(problem)
        optuna = import_optional("optuna", "optuna", "optuna")
        with _quiet(optuna):
            return self._search(optuna, problem, budget, rng, callback)

    def _search(self, optuna, problem, budget, rng, callback):
        enc = MixedEncoding(problem, self.encoding)
        space = _Space(enc)
        fp = problem_fingerprint(problem, self.encoding)
        storage = get_storage(self.storage)
        study_name = self.study_name
        if study_name is None and is_shared(self.storage):
            study_name = default_study_name(fp)
        seed = int(rng.integers(2**31))
        study = open_study(
            storage,
            study_name,
            fp,
            sampler=_make_sampler(optuna, self.sampler, seed, self.pop_size),
        )
        note = ""
        if self.seed_with_dp:
            front = dp_front(problem, self.name)
            for params in space.to_params(*enc.encode(front.configs)):
                study.enqueue_trial(params, skip_if_exists=True)
            note = (
                f"; {len(front)} dp configurations enqueued (dp scored {front.n_evals} cuts apart)"
            )
        batch = self.batch_size or (self.pop_size if self.sampler == "nsga2" else 1)
        n_trials = self.n_trials
        if n_trials is None and budget.max_evals is None and budget.max_seconds is None:
            n_trials = DEFAULT_TRIALS
        self._warn_if_slow(n_trials, budget, problem)
        evals0 = problem.n_evals
        deadline = None if budget.max_seconds is None else time.time() + budget.max_seconds
        evals_left = None if budget.max_evals is None else int(budget.evals_left(problem))
        shares, trial_shares = _shares(evals_left, self.workers), _shares(n_trials, self.workers)
        samples = (
            None if problem.samples is None else problem.samples.tolist()
        )  # a fit on a subsample
        specs = [
            dict(
                cache_path=str(getattr(problem.cache, "path", "")),
                split=problem.split,
                samples=samples,
                objective=problem.objective,
                score=problem.score,
                encoding=self.encoding,
                cost_table=_table_name(problem.costs),
                cost_batch_size=getattr(problem.costs, "batch_size", None),
                sampler=self.sampler,
                seed=seed + i,
                pop_size=self.pop_size,
                storage=self.storage,
                study_name=study.study_name,
                deadline=deadline,
                max_evals=shares[i],
                n_trials=trial_shares[i],
                batch_size=batch,
                max_drop=self.max_drop,
                max_cost=self.max_cost,
            )
            for i in range(1, self.workers)
            if shares[i] != 0 and trial_shares[i] != 0
        ]
        with WorkerPool(
            specs, "search.engines.optuna_engine:worker_main", label="optuna worker"
        ) as workers:
            own = Budget(
                max_evals=shares[0],
                max_seconds=None if deadline is None else max(deadline - time.time(), 1e-6),
            ).start(problem)
            told = _optimize(
                study,
                space,
                problem,
                own,
                n_trials=trial_shares[0],
                batch_size=batch,
                max_drop=self.max_drop,
                max_cost=self.max_cost,
                on_batch=None if callback is None else (lambda: callback(self, problem)),
                run=run_record() if is_shared(self.storage) else None,
            )
            others = [n for numbers in workers.join() for n in numbers]
        problem.n_evals += len(others)  # evaluations made in the other processes
        told += others
        return self._result(study, space, problem, set(told), problem.n_evals - evals0, note)

    def _warn_if_slow(self, n_trials: int | None, budget: Budget, problem) -> None:
        planned = min(n_trials or math.inf, budget.evals_left(problem))
        if self.sampler == "tpe" and TPE_TRIALS_WARN < planned < math.inf:
            warnings.warn(
                SearchWarning(
                    f"optuna: {int(planned)} trials with the TPE sampler will take long (each trial scans every "
                    f"earlier one; above {TPE_TRIALS_WARN} expect many minutes); the default sampler nsga2 "
                    "handles such budgets"
                ),
                stacklevel=2,
            )

    def _result(
        self, study, space: _Space, problem, run_numbers: set[int], n_evals: int, note: str
    ) -> Candidates:
        """Candidates from every COMPLETE trial; ``history_`` over this run's trials in completion order."""
        optuna = import_optional("optuna", "optuna", "optuna")
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        F = np.array([t.values for t in done], dtype=float).reshape(-1, 2)
        G = constraint_values(F, problem.base.error, max_drop=self.max_drop, max_cost=self.max_cost)
        feasible = np.asarray((G <= 0).all(axis=1))
        mine = np.array([t.number in run_numbers for t in done], dtype=bool)
        front = F[~mine & feasible]
        order = sorted(
            np.flatnonzero(mine), key=lambda i: (done[i].datetime_complete, done[i].number)
        )
        step = max(1, len(order) // 200)
        self.history_: list[tuple[int, float]] = []
        for a in range(0, len(order), step):
            front = np.concatenate([front, F[[i for i in order[a : a + step] if feasible[i]]]])
            front = front[non_dominated(front)]
            self.history_.append((min(a + step, len(order)), hypervolume(front)))
        ok = np.flatnonzero(feasible)
        keep = ok[non_dominated(F[ok])]
        H, X = space.from_params([done[i].params for i in keep])
        configs = space.enc.to_configs(H, X)
        msg = (
            f"study {study.study_name!r}: {len(done)} complete trials, {n_evals} evaluated by this run "
            f"({self.workers} worker{'s' if self.workers > 1 else ''}){note}"
        )
        if not configs:
            msg += "; no feasible configuration found"
        return Candidates(configs, F[keep], msg)
