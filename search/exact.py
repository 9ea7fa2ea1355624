"""Exact numbers of many configurations on a whole split, read chunk by chunk in bounded memory.

:class:`SplitEvaluator` is what reports and exports are computed with: accuracy, cost and exit
fractions of each configuration, exactly as :meth:`ExitProblem.evaluate_one` gives them, but
without holding the split in memory. Within each chunk the configurations are evaluated together:
every distinct (exit, threshold) pair among them is compared with the chunk's scores once and
packed into a bit row; a configuration is then walked with bitwise operations on 64 samples per
word (leave = passes & still present; count with popcount), all configurations at once per slot.
Results are kept per configuration, so asking again (the table, then the export) reads nothing.
"""

from __future__ import annotations

import numpy as np

from contract import float32_cut
from data_cache.blocks import BlockReader

from ._validation import check_split
from .chunks import DEFAULT_CHUNK_SIZE, read_block
from .config import ExitConfig
from .costs import CostTable, paired_costs
from .learned import Params
from .problem import Evaluation, check_scored
from .scores import compute_scores
from .standalone import SplitStats

__all__ = ["SplitEvaluator"]

_BATCH = 512  # configurations evaluated together (bounds the bit rows held per chunk)

if hasattr(np, "bitwise_count"):

    def _popcount(words: np.ndarray) -> np.ndarray:
        """Set bits per row of ``(rows, n_words)`` uint64."""
        return np.bitwise_count(words).sum(axis=1, dtype=np.int64)
else:  # numpy < 2.0
    _BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def _popcount(words: np.ndarray) -> np.ndarray:
        return _BYTE_BITS[words.view(np.uint8)].sum(axis=1, dtype=np.int64)


def _pack(flags: np.ndarray, width: int) -> np.ndarray:
    """Rows of bool flags ``(rows, n)`` as bit rows ``(rows, width)`` uint64 (zero beyond n)."""
    padded = np.zeros((flags.shape[0], width * 64), dtype=bool)
    padded[:, : flags.shape[1]] = flags
    return np.packbits(padded, axis=1, bitorder="little").view(np.uint64)


class _Batch:
    """Configurations as arrays, longest first: ``exits``/``cuts`` ``(K, L)`` per enabled slot, each slot's
    score row (``rule index * n_exits + exit`` in the stacked scores of the rules), and every distinct
    (score row, float32 cut) pair, grouped by row, with each slot's pair index."""

    def __init__(
        self, configs: list[ExitConfig], rule_index: dict[str, int] | None = None, n_exits: int = 0
    ):
        lengths = np.array([len(c.exits) for c in configs], dtype=np.int64)
        self.order = np.argsort(-lengths, kind="stable")
        self.n_enabled = lengths[self.order]
        K, L = len(configs), int(lengths.max(initial=0))
        self.exits = np.full((K, L), -1, dtype=np.int64)
        rows = np.full((K, L), -1, dtype=np.int64)
        self.cuts = np.zeros((K, L), dtype=np.float32)
        for row, i in enumerate(self.order):
            c = configs[i]
            self.exits[row, : len(c.exits)] = c.exits
            shift = [rule_index[r] * n_exits if rule_index else 0 for r in c.rule_names]
            rows[row, : len(c.exits)] = np.add(c.exits, shift)
            self.cuts[row, : len(c.exits)] = [float32_cut(t) for t in c.thresholds]
        on = self.exits >= 0
        pairs, which = np.unique(
            np.stack([rows[on].astype(np.float64), self.cuts[on]], axis=1),
            axis=0,
            return_inverse=True,
        )  # sorted by score row, then cut
        self.n_pairs = len(pairs)
        self.pair = np.full((K, L), self.n_pairs, dtype=np.int64)  # n_pairs: an all-zero row
        self.pair[on] = which.reshape(-1)
        starts = (
            np.flatnonzero(np.diff(pairs[:, 0], prepend=-1.0))
            if self.n_pairs
            else np.zeros(0, dtype=np.int64)
        )
        ends = np.append(starts[1:], self.n_pairs)
        # (score row, its distinct cuts, first pair row); no pairs: one end and no start
        self.groups = [
            (int(pairs[a, 0]), pairs[a:b, 1].astype(np.float32), int(a))
            for a, b in zip(starts, ends, strict=False)
        ]
        self.active = [
            int(np.count_nonzero(self.n_enabled > slot)) for slot in range(L)
        ]  # rows with that slot

    def count(
        self, scores: np.ndarray, correct: np.ndarray, final: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Samples leaving at each slot (then the final exit) ``(K, L + 1)``, and how many of them are
        right (same shape), in one chunk (``scores``: the rules' scores stacked); rows in batch order."""
        n = scores.shape[1]
        width = -(-n // 64)
        right = _pack(correct, width)
        passes = np.zeros((self.n_pairs + 1, width), dtype=np.uint64)
        for e, cuts, first in self.groups:
            passes[first : first + cuts.size] = _pack(scores[e][None, :] > cuts[:, None], width)
        K, L = self.exits.shape
        present = np.repeat(_pack(np.ones((1, n), dtype=bool), width), K, axis=0)
        counts = np.zeros((K, L + 1), dtype=np.int64)
        n_right = np.zeros((K, L + 1), dtype=np.int64)
        for slot in range(L):
            k = self.active[slot]
            leave = passes[self.pair[:k, slot]]
            leave &= present[:k]
            present[:k] ^= leave
            counts[:k, slot] = _popcount(leave)
            leave &= right[self.exits[:k, slot]]
            n_right[:k, slot] = _popcount(leave)
        rows = np.arange(K)
        counts[rows, self.n_enabled] = _popcount(present)
        present &= right[final]
        n_right[rows, self.n_enabled] = _popcount(present)
        return counts, n_right


class SplitEvaluator:
    """Exact evaluation of configurations on every sample of one split (see the module docstring).

    Offers what reports and exports use of an :class:`ExitProblem`: ``cache``, ``split``, ``score``,
    ``rules``, ``objective``, ``costs``, ``n_samples``, ``base``, ``evaluate``, ``evaluate_one``; plus ``stats``
    (per-exit accuracy, the oracle bound). Built from the cache (streamed, ``chunk_size`` samples at
    a time) or from a problem that holds the whole split (:meth:`of_problem`: nothing is read).
    ``rules``: every rule the configurations may use at an exit (``score`` first); ``params``: the learned rules'
    params per exit (:mod:`search.learned`), which the configurations must carry.
    """

    def __init__(
        self,
        cache,
        split: str,
        *,
        costs: CostTable,
        score: str,
        objective: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        problem=None,
        rules: tuple[str, ...] | None = None,
        params: Params | None = None,
    ):
        self.cache, self.split, self.costs = cache, check_split(cache, split), costs
        self.params: Params = dict(params or {})
        self.score, self.objective, self.chunk_size = score, objective, chunk_size
        self.rules = tuple(dict.fromkeys((score, *(rules or ()))))
        self.n_samples = cache.n_samples(split)
        self._problem = problem
        # per configuration: its evaluation, samples leaving at each exit and how many of them are right
        self._known: dict[ExitConfig, tuple[Evaluation, np.ndarray, np.ndarray]] = {}
        self._stats: SplitStats | None = None

    @classmethod
    def of_problem(cls, problem, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> SplitEvaluator:
        """An evaluator over the arrays of ``problem``, which must hold its whole split."""
        if problem.samples is not None:
            raise ValueError("of_problem needs a problem holding every sample of its split")
        return cls(
            problem.cache,
            problem.split,
            costs=problem.unpaired,
            score=problem.score,
            objective=problem.objective,
            chunk_size=chunk_size,
            problem=problem,
            rules=problem.rules,
            params=problem.params,
        )

    @classmethod
    def like(cls, problem, split: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> SplitEvaluator:
        """An evaluator of ``split`` with ``problem``'s cost model and score kind, streamed from its cache."""
        return cls(
            problem.cache,
            split,
            costs=problem.unpaired,
            score=problem.score,
            objective=problem.objective,
            chunk_size=chunk_size,
            rules=problem.rules,
            params=problem.params,
        )

    # -- reading -------------------------------------------------------------------------------
    def _blocks(self):
        """``(scores, correct)`` of consecutive chunks: slices of the problem's arrays, or read; with several
        rules, their scores stacked ``(n_rules * n_exits, n)`` in the order of ``rules``."""
        with BlockReader() as reader:
            for start in range(0, self.n_samples, self.chunk_size):
                stop = min(self.n_samples, start + self.chunk_size)
                if self._problem is not None:
                    p = self._problem
                    scores = [p.scores_of(r)[:, start:stop] for r in self.rules]
                    correct = p.correct[:, start:stop]
                else:
                    first, correct = read_block(
                        self.cache,
                        self.split,
                        self.score,
                        start,
                        stop,
                        reader,
                        self.params.get(self.score),
                    )
                    scores = [first] + [
                        compute_scores(
                            self.cache,
                            self.split,
                            r,
                            start=start,
                            stop=stop,
                            reader=reader,
                            params=self.params.get(r),
                        )
                        for r in self.rules[1:]
                    ]
                yield (scores[0] if len(scores) == 1 else np.concatenate(scores)), correct

    def _pass(self, configs: list[ExitConfig]) -> None:
        """One pass over the split: evaluate ``configs`` (and the split's stats, the first time)."""
        stats = None
        if self._stats is None:
            stats = SplitStats.empty(len(self.cache.exits))
        index = {r: i for i, r in enumerate(self.rules)}
        n_exits = len(self.cache.exits)
        batches = [
            _Batch(configs[a : a + _BATCH], index, n_exits) for a in range(0, len(configs), _BATCH)
        ]
        counts = [np.zeros((len(b.order), b.exits.shape[1] + 1), dtype=np.int64) for b in batches]
        n_right = [np.zeros_like(c) for c in counts]
        final = len(self.cache.exits) - 1
        for scores, correct in self._blocks():
            if stats is not None:
                stats.add(correct, self.costs)
            for b, cnt, right in zip(batches, counts, n_right, strict=True):
                c, r = b.count(scores, correct, final)
                cnt += c
                right += r
        if stats is not None:
            self._stats = stats
        for a, b, cnt, right in zip(
            range(0, len(configs), _BATCH), batches, counts, n_right, strict=True
        ):
            for row, i in enumerate(b.order):
                config = configs[a + i]
                k = len(config.exits)
                self._known[config] = (
                    self._evaluation(config, cnt[row, : k + 1], int(right[row].sum())),
                    cnt[row, : k + 1],
                    right[row, : k + 1],
                )

    def _evaluation(self, config: ExitConfig, counts: np.ndarray, n_right: int) -> Evaluation:
        costs = paired_costs(self.costs, self.cache, config.exits, config.rule_names)
        cost = costs.mean_cost_of(config.exits, counts)
        return Evaluation(
            n_right / self.n_samples,
            cost / costs.base_cost,
            cost,
            tuple((counts / self.n_samples).tolist()),
        )

    def _lookup(self, configs) -> list[tuple[Evaluation, np.ndarray, np.ndarray]]:
        configs = [self._check(c) for c in configs]
        missing = list(dict.fromkeys(c for c in configs if c not in self._known))
        if missing or self._stats is None:
            self._pass(missing)
        return [self._known[c] for c in configs]

    # -- the problem-like interface ------------------------------------------------------------
    def evaluations(self, configs) -> list[Evaluation]:
        """Exact evaluations of ``configs``; those not seen before are computed in one pass."""
        return [known[0] for known in self._lookup(configs)]

    def exit_outcomes(self, config: ExitConfig) -> tuple[np.ndarray, np.ndarray]:
        """Samples leaving at each enabled exit, then at the final one, and how many of them are right."""
        _, counts, right = self._lookup([config])[0]
        return counts, right

    def evaluate(self, configs) -> np.ndarray:
        """``F`` ``(n_configs, 2)`` = ``[error, relative_cost]``."""
        evs = self.evaluations(configs)
        return np.array([[e.error, e.relative_cost] for e in evs], dtype=np.float64).reshape(-1, 2)

    def evaluate_one(self, config: ExitConfig) -> Evaluation:
        return self.evaluations([config])[0]

    def _check(self, config: ExitConfig) -> ExitConfig:
        return check_scored(config, self.cache, self.rules, "the evaluator scores", self.params)

    @property
    def stats(self) -> SplitStats:
        if self._stats is None:
            self._pass([])
        assert self._stats is not None  # a pass with no configurations sums the split's statistics
        return self._stats

    @property
    def base(self) -> Evaluation:
        """The base model (no early exit)."""
        n_right = int(self.stats.exit_correct[-1])
        return Evaluation(n_right / self.n_samples, 1.0, self.costs.base_cost, (1.0,))
