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

import math
import time
import warnings

import numpy as np

from .._validation import SearchError, SearchWarning, check_scalar
from ..budget import Budget
from ..encoding import MixedEncoding, check_constraints, constraint_values
from ..front import non_dominated
from ..indicators import hypervolume
from ..learned import params_to_json
from ..storage import (
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
from ._optuna_space import SAMPLERS, Space, optimize, quiet
from ._optuna_space import make_sampler as _make_sampler
from ._optuna_worker import split_shares, table_name, worker_main
from ._population import base_within_constraints, dp_front, import_optional
from ._workers import WorkerPool

__all__ = ["OptunaEngine", "SAMPLERS", "TPE_TRIALS_WARN", "worker_main"]

DEFAULT_TRIALS = 500
# TPE scans every earlier trial on each ask (and multivariate TPE refits its densities): on this
# problem it ran about 2,000 trials a minute at the start and far fewer after a few thousand
TPE_TRIALS_WARN = 2_000


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
        with quiet(optuna):
            return self._search(optuna, problem, budget, rng, callback)

    def _search(self, optuna, problem, budget, rng, callback):
        enc = MixedEncoding(problem, self.encoding)
        space = Space(enc)
        seed = int(rng.integers(2**31))
        study = self._open(optuna, problem, seed)
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
        shares = split_shares(evals_left, self.workers), split_shares(n_trials, self.workers)
        specs = self._worker_specs(problem, study.study_name, seed, deadline, shares, batch)
        with WorkerPool(
            specs, "search.engines._optuna_worker:worker_main", label="optuna worker"
        ) as workers:
            own = Budget(
                max_evals=shares[0][0],
                max_seconds=None if deadline is None else max(deadline - time.time(), 1e-6),
            ).start(problem)
            told = optimize(
                study,
                space,
                problem,
                own,
                n_trials=shares[1][0],
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

    def _open(self, optuna, problem, seed: int):
        """The study (a shared storage's default name derived from the problem)."""
        fp = problem_fingerprint(problem, self.encoding)
        study_name = self.study_name
        if study_name is None and is_shared(self.storage):
            study_name = default_study_name(fp)
        return open_study(
            get_storage(self.storage),
            study_name,
            fp,
            sampler=_make_sampler(optuna, self.sampler, seed, self.pop_size),
        )

    def _worker_specs(
        self,
        problem,
        study_name: str,
        seed: int,
        deadline: float | None,
        shares: tuple[list[int | None], list[int | None]],
        batch: int,
    ) -> list[dict]:
        """What each extra worker needs (``shares``: evaluations and trials per worker, this one first);
        workers whose share is 0 are not started."""
        evals, trials = shares
        samples = (
            None if problem.samples is None else problem.samples.tolist()
        )  # a fit on a subsample
        return [
            dict(
                cache_path=str(getattr(problem.cache, "path", "")),
                split=problem.split,
                samples=samples,
                objective=problem.objective,
                score=problem.score,
                params=params_to_json(
                    problem.params
                ),  # learned rules: the fit's params, never refitted
                encoding=self.encoding,
                cost_table=table_name(problem.costs),
                cost_batch_size=getattr(problem.costs, "batch_size", None),
                sampler=self.sampler,
                seed=seed + i,
                pop_size=self.pop_size,
                storage=self.storage,
                study_name=study_name,
                deadline=deadline,
                max_evals=evals[i],
                n_trials=trials[i],
                batch_size=batch,
                max_drop=self.max_drop,
                max_cost=self.max_cost,
            )
            for i in range(1, self.workers)
            if evals[i] != 0 and trials[i] != 0
        ]

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
        self, study, space: Space, problem, run_numbers: set[int], n_evals: int, note: str
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
