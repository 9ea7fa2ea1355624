"""The optuna engine's extra worker processes: each opens the cache and the shared study itself and
optimises its share (``worker_main``, started by :class:`WorkerPool`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..budget import Budget
from ..encoding import MixedEncoding
from ..learned import params_from_json
from ..storage import get_storage, open_study, problem_fingerprint, run_record
from ._optuna_space import Space, make_sampler, optimize, quiet
from ._population import import_optional
from ._workers import read_spec_and_watch_parent

__all__ = ["split_shares", "table_name", "worker_main"]


def run_worker(spec: dict) -> list[int]:
    """One extra worker: open the cache itself, load the study, optimise its share; the told trial numbers."""
    from data_cache import open_cache

    from ..costs import cost_table
    from ..problem import ExitProblem

    optuna = import_optional("optuna", "optuna", "optuna")
    with quiet(optuna):
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
            params=params_from_json(spec["params"]),
        )  # the data digest is checked below
        fp = problem_fingerprint(problem, spec["encoding"])
        sampler = make_sampler(optuna, spec["sampler"], spec["seed"], spec["pop_size"])
        study = open_study(
            get_storage(spec["storage"]), spec["study_name"], fp, sampler=sampler, create=False
        )
        seconds = None if spec["deadline"] is None else spec["deadline"] - time.time()
        if seconds is not None and seconds <= 0:
            return []
        budget = Budget(max_evals=spec["max_evals"], max_seconds=seconds).start(problem)
        return optimize(
            study,
            Space(MixedEncoding(problem, spec["encoding"])),
            problem,
            budget,
            n_trials=spec["n_trials"],
            batch_size=spec["batch_size"],
            max_drop=spec["max_drop"],
            max_cost=spec["max_cost"],
            run=run_record(),
        )


def table_name(costs) -> str | None:
    """The measured table a time objective reads (None for the cache's own cost models)."""
    model = getattr(costs, "model", None)
    return None if model is None else model.table.name


def worker_main() -> int:
    """Entry of a worker process (``WorkerPool``): the told trial numbers go to ``spec['result']``."""
    spec = read_spec_and_watch_parent()
    numbers = run_worker(spec)
    Path(spec["result"]).write_text(json.dumps(numbers))
    return 0


def split_shares(total: int | None, n: int) -> list[int | None]:
    """``total`` split into ``n`` near-equal integer shares (None stays None)."""
    if total is None:
        return [None] * n
    return [total // n + (i < total % n) for i in range(n)]
