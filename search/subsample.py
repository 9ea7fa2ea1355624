"""What a search fits on: the whole search split, or a seeded random subsample of a large one.

Every method searches an :class:`ExitProblem` held in memory. For a split larger than ``above``
samples the problem holds a seeded random subsample of ``size`` samples instead (read chunk by chunk
from the cache), so any method runs in bounded memory and time; the configurations it returns are
then scored exactly on every sample by :class:`search.exact.SplitEvaluator`. The defaults come from
``benchmarks/bench_subsample.py`` (hypervolume lost against a fit on every sample, and time, on caches
of 100k-300k samples): see ``docs/search.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import SearchError
from .chunks import DEFAULT_CHUNK_SIZE
from .problem import ExitProblem

__all__ = [
    "DEFAULT_SUBSAMPLE",
    "DEFAULT_SUBSAMPLE_ABOVE",
    "FitSample",
    "plan_fit",
    "fit_problem",
    "check_fit_memory",
    "certification_rows",
    "never_right",
]

DEFAULT_SUBSAMPLE = 65_536  # lost 0.08-0.16% of the full fit's hypervolume at 100k-300k samples
DEFAULT_SUBSAMPLE_ABOVE = (
    131_072  # up to twice the subsample, a fit on every sample costs at most ~2x
)


@dataclass(frozen=True)
class FitSample:
    """A seeded random subsample of ``size`` of the ``of`` samples of a split."""

    size: int
    of: int
    seed: int

    def indices(self) -> np.ndarray:
        """The sorted sample indices (the same for the same size, split size and seed)."""
        rng = np.random.default_rng([self.seed, self.of, self.size])
        return np.sort(rng.choice(self.of, self.size, replace=False))

    def to_json(self) -> dict:
        return {"subsample": self.size, "of": self.of, "seed": self.seed}


def plan_fit(
    cache,
    split: str = "search",
    *,
    subsample: int = DEFAULT_SUBSAMPLE,
    above: int = DEFAULT_SUBSAMPLE_ABOVE,
    seed: int = 0,
) -> FitSample | None:
    """The subsample to fit on, or None to fit on the whole split; SearchError for a size that cannot work."""
    n_positions = len({e.position for e in cache.exits[:-1]})
    if subsample < max(1, n_positions):
        raise SearchError(
            f"subsample size {subsample} is below the number of exit positions ({n_positions}); "
            f"a fit needs more samples than positions (the default is {DEFAULT_SUBSAMPLE})"
        )
    n_samples = cache.n_samples(split)
    if n_samples <= above or n_samples <= subsample:
        return None
    return FitSample(subsample, n_samples, seed)


def fit_problem(
    cache,
    split: str = "search",
    fit: FitSample | None = None,
    *,
    objective: str = "macs",
    score: str = "max_prob",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    costs=None,
    rules: tuple[str, ...] | None = None,
    fit_rows: np.ndarray | None = None,
) -> ExitProblem:
    """The problem methods search: the whole split (``fit`` None) or the subsample ``fit``; ``costs``: a cost table
    built already (``search.costs.cost_table``), else one under ``objective``; ``rules``: the exit rules dp may
    choose per exit (``score`` alone when None); ``fit_rows``: the held rows learned rules are fitted on (all when
    None; :class:`~search.problem.ExitProblem`)."""
    return ExitProblem(
        cache,
        split,
        objective=objective,
        score=score,
        chunk_size=chunk_size,
        costs=costs,
        samples=None if fit is None else fit.indices(),
        rules=rules,
        fit_rows=fit_rows,
    )


def never_right(problem: ExitProblem) -> list[str]:
    """One line per exit (the final one included) that is wrong on every sample the problem holds: the search
    runs, but its front means nothing there; ``search.pareto`` prints them as warnings."""
    from data_cache._validation import never_right_line

    hits = ~problem.correct.any(axis=1)
    where = problem.split if problem.samples is None else f"{problem.split}, the fitted subsample"
    last = len(problem.cache.exits) - 1
    return [
        never_right_line(problem.cache.exits[e].name, e == last, where, problem.n_samples)
        for e in np.flatnonzero(hits)
    ]


# bytes per (sample, exit) a method holds besides the problem's own 5 (float32 score, bool correctness)
_METHOD_BYTES = {"dp": 9, "nsga2": 8, "optuna": 8, "global": 4, "geometric": 4}


def certification_rows(cache, fraction: float, sample: FitSample | None) -> int:
    """Rows (of 5 bytes per exit) a certified answer holds besides the fit problem: a calibration split, or a
    draw outside the subsample, read and then shuffled (two copies); a cut of the whole search split: the fit
    and calibration parts, copies of the search problem together."""
    from .calibration import CALIBRATION_SPLIT, planned_calibration_size

    if CALIBRATION_SPLIT in cache.splits() or sample is not None:
        return 2 * planned_calibration_size(
            cache, fraction, None if sample is None else sample.size
        )
    return cache.n_samples("search")


def check_fit_memory(
    n_samples: int, n_exits: int, methods, limit_bytes: float, *, calibration_rows: int = 0
) -> None:
    """SearchError naming the method when fitting it on ``n_samples`` x ``n_exits`` (plus the
    ``calibration_rows`` a certified answer loads, :func:`certification_rows`) would need more than
    ``limit_bytes``, checked before anything is read.

    The estimate: the problem's arrays (5 bytes per sample and exit) plus what the method adds (dp: its
    per-exit sorted copies, and 256 MB of reused curves; nsga2/optuna: the quantile tables of the
    encoding; global/geometric: sorted scores of the enabled exits; others: about one byte), plus 5 bytes
    per calibration row and exit.
    """
    for m in methods:
        need = (
            n_samples * n_exits * (5 + _METHOD_BYTES.get(m, 1))
            + (256 << 20 if m == "dp" else 0)
            + calibration_rows * n_exits * 5
        )
        if need > limit_bytes:
            rows = f"{n_samples:,} samples" + (
                f" and certification on {calibration_rows:,} more rows (calibration)"
                if calibration_rows
                else ""
            )
            raise SearchError(
                f"method {m!r} on {rows} x {n_exits} exits needs about {need / 1e9:.3g} GB of memory, over the "
                f"--memory-limit of {limit_bytes / 1e9:.3g} GB; fit on a subsample (--subsample, --subsample-above) "
                "or raise --memory-limit"
            )
