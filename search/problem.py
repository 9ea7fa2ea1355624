"""``ExitProblem``: one split of a cache + a cost model -> objectives of exit configurations."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from contract import partner_exit, reads_partner

from ._validation import SearchError, check_split, checked
from .chunks import DEFAULT_CHUNK_SIZE, load_scores, load_split
from .config import ExitConfig
from .costs import CostTable, cost_table, paired_costs
from .learned import Params, fit_params, learned, params_mismatch
from .scores import rule_for

__all__ = ["ExitProblem", "Evaluation", "decisive_exits"]


def decisive_exits(cache, rule) -> list[int]:
    """The early exits of ``cache`` at which ``rule`` (a rule or its name) can decide: all of them, or for a rule
    reading its partner exit only those that have one (elsewhere it scores its minimum and never leaves)."""
    early = range(len(cache.exits) - 1)
    if not reads_partner(rule):
        return list(early)
    return [i for i in early if partner_exit(cache.exits, i) is not None]


def check_scored(
    config: ExitConfig, cache, rules: tuple[str, ...], scorer: str, params: Params | None = None
) -> ExitConfig:
    """``config`` checked against ``cache``, its rules among the ``rules`` scored (``scorer`` says by what) and its
    learned exits' params those scored (``params``), else a SearchError: what a problem and an exact evaluator
    both ask of a configuration."""
    other = [r for r in dict.fromkeys(config.rule_names or (config.score,)) if r not in rules]
    if other:
        scored = " ".join(rules) if len(rules) > 1 else repr(rules[0])
        raise SearchError(f"configuration uses score {other[0]!r} but {scorer} {scored}")
    why = params_mismatch(config, params) if params else None
    if why:
        raise SearchError(f"configuration: {why}")
    return checked(config, cache)


@dataclass(frozen=True)
class Evaluation:
    """What one configuration does on one split."""

    accuracy: float
    relative_cost: float
    cost: float
    exit_fractions: tuple[float, ...]

    @property
    def error(self) -> float:
        return 1.0 - self.accuracy


class ExitProblem:
    """Scores and correctness of every exit on one split, and the cost model.

    ``evaluate(configs)`` gives ``F`` ``(n_configs, 2)`` = ``[error, relative_cost]``, both minimised,
    and counts evaluations in ``n_evals``. ``positions`` are the early positions in execution order;
    ``position_exits[j]`` lists the exit indices (head types) standing at ``positions[j]``: those ``score`` can
    decide at (:func:`decisive_exits`; the engines choose among them, dp's other rules see every exit).

    ``objective``: a registered cost model (``contract/costs/``) the cost table is built under, unless ``costs``
    (a ``CostTable``) is given; ``self.objective`` is the table's. ``self.costs`` charges configurations deciding
    with ``score`` (a rule reading the partner exit pays its head: ``CostTable.paired``), ``self.unpaired`` is the
    table as built or given, and :meth:`costs_of` charges a configuration with one rule per exit.

    ``samples``: sorted indices of the split's samples to hold (all when None: ``self.samples`` is
    None); the split is read ``chunk_size`` samples at a time, so only what is held stays in memory.

    ``rules``: the exit rules a configuration may use at each exit (``score`` first, the default and the one of
    ``scores``; :meth:`scores_of` gives each rule's scores). Engines other than dp use ``score`` alone.

    ``params``: the learned params of rules that have them (``gate``; :mod:`search.learned`), per rule and exit
    index, used as given (an exit without any scores 0 and never decides). With ``params`` None, such rules are
    fitted here at every early exit on ``fit_rows`` (sorted indices into the held samples; all when None), and
    nowhere else: :meth:`on_split`, the calibration problems and the evaluators score with ``self.params``, and
    :meth:`config` puts them into the configurations.
    """

    def __init__(
        self,
        cache,
        split: str = "search",
        *,
        objective: str = "macs",
        score: str = "max_prob",
        costs: CostTable | None = None,
        samples=None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        rules: tuple[str, ...] | None = None,
        params: Params | None = None,
        fit_rows: np.ndarray | None = None,
    ):
        self.cache, self.split, self.score = cache, check_split(cache, split), score
        self.rules = tuple(dict.fromkeys((score, *(rules or ()))))
        self.rule = rule_for(score)
        self.rule_objects = {name: rule_for(name) for name in self.rules}
        self.unpaired = costs if costs is not None else cost_table(cache, objective)
        early = range(len(cache.exits) - 1)
        self.costs = paired_costs(self.unpaired, cache, early, [score] * len(early))
        self.objective = self.costs.objective  # the cost model's name: what an export records
        self.split_size = cache.n_samples(split)
        self.samples = None if samples is None else _check_samples(samples, self.split_size)
        self.params: Params = {r: dict(p) for r, p in (params or {}).items()}
        self._load(chunk_size, fit_rows if params is None else False)
        # the exits ``score`` can decide at (a rule reading the partner exit: only those with one)
        deciding = decisive_exits(cache, self.rule)
        self.positions = sorted({cache.exits[i].position for i in deciding})
        self.position_exits = [
            [i for i in deciding if cache.exits[i].position == p] for p in self.positions
        ]
        self.position_of_exit = {i: j for j, ex in enumerate(self.position_exits) for i in ex}
        self.n_evals = 0

    def _load(self, chunk_size: int, fit_rows: np.ndarray | None | bool) -> None:
        """Scores ``(n_exits, n_samples)`` float32 of every rule and correctness (bool) of the held samples,
        learned rules fitted first on ``fit_rows`` (correctness is read before their scores; False: never)."""
        cache, split, score = self.cache, self.split, self.score
        fit = fit_rows is not False
        fit_first = fit and self.rule.learned
        self.scores, self.correct = load_split(
            cache,
            split,
            "max_prob" if fit_first else score,
            samples=self.samples,
            chunk_size=chunk_size,
            params=self.params.get(score),
        )
        todo = learned(self.rules) if fit else ()
        if todo:
            held = (
                np.arange(self.n_samples)
                if fit_rows is None
                else _check_fit_rows(fit_rows, self.n_samples)
            )
            rows = held if self.samples is None else self.samples[held]
            for r in todo:
                self.params[r] = fit_params(
                    cache, split, r, rows, self.correct[:, held], chunk_size
                )
        if fit_first:
            self.scores = load_scores(
                cache,
                split,
                score,
                samples=self.samples,
                chunk_size=chunk_size,
                params=self.params[score],
            )
        self.rule_scores = {score: self.scores}
        for name in self.rules[1:]:
            self.rule_scores[name] = load_scores(
                cache,
                split,
                name,
                samples=self.samples,
                chunk_size=chunk_size,
                params=self.params.get(name),
            )

    # -- sizes -------------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return self.scores.shape[1]

    @property
    def n_exits(self) -> int:
        return self.scores.shape[0]

    @property
    def n_positions(self) -> int:
        return len(self.positions)

    @property
    def final_exit(self) -> int:
        return self.n_exits - 1

    def take(self, idx) -> ExitProblem:
        """The same problem restricted to the samples ``idx`` (e.g. a calibration part of the split)."""
        sub = object.__new__(ExitProblem)
        sub.__dict__.update(self.__dict__)
        sub.scores, sub.correct, sub.n_evals = self.scores[:, idx], self.correct[:, idx], 0
        sub.rule_scores = {name: s[:, idx] for name, s in self.rule_scores.items()}
        sub.samples = np.arange(self.n_samples)[idx] if self.samples is None else self.samples[idx]
        return sub

    def on_split(self, split: str) -> ExitProblem:
        """The same problem (cost model, rules, learned params: never refitted) on another split of the cache."""
        return ExitProblem(
            self.cache,
            split,
            score=self.score,
            costs=self.unpaired,
            objective=self.objective,
            rules=self.rules,
            params=self.params,
        )

    def costs_of(self, exits, rules=None) -> CostTable:
        """The cost table a configuration enabling ``exits`` with ``rules`` (``score`` at each when None) is
        charged by: each exit whose rule reads its partner pays the partner's head."""
        if rules is None:
            return self.costs
        return paired_costs(self.unpaired, self.cache, exits, rules)

    def scores_of(self, rule: str) -> np.ndarray:
        """Scores ``(n_exits, n_samples)`` of one of the problem's rules."""
        return self.rule_scores[rule]

    # -- evaluation --------------------------------------------------------------------------
    def assign(self, config: ExitConfig) -> np.ndarray:
        """Exit index ``(n_samples,)`` at which every sample leaves under ``config``."""
        self.check_config(config)
        out = np.full(self.n_samples, self.final_exit, dtype=np.int32)
        remaining = np.ones(self.n_samples, dtype=bool)
        leave = np.empty(self.n_samples, dtype=bool)
        for e, t, r in zip(config.exits, config.thresholds, config.rule_names, strict=True):
            self.rule.leaves(
                self.rule_scores[r][e], t, out=leave
            )  # = float64 comparison, the rule's one leave test
            leave &= remaining
            out[leave] = e
            remaining &= ~leave
        return out

    def exit_outcomes(self, config: ExitConfig) -> tuple[np.ndarray, np.ndarray]:
        """Samples leaving at each enabled exit, then at the final one, and how many of them are right."""
        where = self.assign(config)
        exits = list(config.exits) + [self.final_exit]
        counts = np.array([np.count_nonzero(where == e) for e in exits], dtype=np.int64)
        right = np.array(
            [np.count_nonzero(self.correct[e][where == e]) for e in exits], dtype=np.int64
        )
        return counts, right

    def _counts(self, exits, thresholds, rules=None) -> tuple[np.ndarray, int]:
        """Samples leaving at each enabled exit (then final), and how many of all are correct; ``rules``: the
        rule of each enabled exit (all ``score`` when None)."""
        remaining = np.ones(self.n_samples, dtype=bool)
        leave = np.empty(self.n_samples, dtype=bool)
        counts = np.empty(len(exits) + 1, dtype=np.int64)
        n_correct = 0
        rules = rules or (self.score,) * len(exits)
        for j, (e, t) in enumerate(zip(exits, thresholds, strict=True)):
            self.rule.leaves(self.rule_scores[rules[j]][e], t, out=leave)
            leave &= remaining
            counts[j] = np.count_nonzero(leave)
            if counts[j]:
                n_correct += np.count_nonzero(leave & self.correct[e])
                remaining &= ~leave
        counts[-1] = np.count_nonzero(remaining)
        n_correct += np.count_nonzero(remaining & self.correct[self.final_exit])
        return counts, n_correct

    def config(
        self,
        exits: Iterable[int],
        thresholds: Iterable[float],
        rules: Iterable[str] | None = None,
    ) -> ExitConfig:
        """A configuration built from this problem's own exits (in execution order, one per position) and
        thresholds in the rule's range, each exit deciding with ``rules`` (``score`` when None) and carrying the
        params this problem learned for it: what the engines build, valid by construction
        (:meth:`ExitConfig.built_for`), so it is not checked again when evaluated."""
        exits = tuple(exits)
        names = tuple(rules) if rules is not None else (self.score,) * len(exits)
        params = tuple(
            dict(self.params[r][e]) if r in self.params else {}
            for e, r in zip(exits, names, strict=True)
        )
        config = ExitConfig(
            exits,
            tuple(float(t) for t in thresholds),
            self.score,
            params if any(params) else (),
            names,
        )
        return config.built_for(self.cache)

    def check_config(self, config: ExitConfig) -> ExitConfig:
        """Raise SearchError unless ``config`` fits this cache and uses this problem's rules."""
        return check_scored(
            config, self.cache, self.rules, "the problem was built for", self.params
        )

    def evaluate_one(self, config: ExitConfig) -> Evaluation:
        """Accuracy, cost and exit fractions of one configuration (counts as one evaluation)."""
        self.check_config(config)
        self.n_evals += 1
        counts, n_correct = self._counts(config.exits, config.thresholds, config.rule_names)
        cost = self.costs_of(config.exits, config.rule_names).mean_cost_of(config.exits, counts)
        return Evaluation(
            float(n_correct) / self.n_samples,
            cost / self.costs.base_cost,
            cost,
            tuple((counts / self.n_samples).tolist()),
        )

    def evaluate(self, configs) -> np.ndarray:
        """``F`` ``(n_configs, 2)`` = ``[error, relative_cost]`` of ExitConfigs."""
        configs = [self.check_config(c) for c in configs]
        F = np.empty((len(configs), 2))
        for i, c in enumerate(configs):
            F[i] = self._objectives(c.exits, c.thresholds, c.rule_names)
        self.n_evals += len(configs)
        return F

    def evaluate_arrays(self, choice: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        """Vectorised entry for population engines.

        ``choice`` ``(n_configs, n_positions)`` int: per position the index into ``position_exits[j]``
        of the enabled head type, or -1 for none; ``thresholds`` the same shape. Returns ``F``.
        """
        choice, thresholds = np.asarray(choice), np.asarray(thresholds, dtype=np.float64)
        if (
            choice.ndim != 2
            or choice.shape != thresholds.shape
            or choice.shape[1] != self.n_positions
        ):
            raise SearchError(
                f"choice and thresholds must both be (n_configs, {self.n_positions}); "
                f"got {choice.shape} and {thresholds.shape}"
            )
        n_heads = np.array([len(ex) for ex in self.position_exits])
        bad = (choice < -1) | (choice >= n_heads[None, :])
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise SearchError(
                f"choice[{i}, {j}] = {choice[i, j]}: position {j} has head slots 0..{n_heads[j] - 1} "
                "(or -1 for none)"
            )
        F = np.empty((choice.shape[0], 2))
        for i in range(choice.shape[0]):
            exits, thr = self.decode(choice[i], thresholds[i])
            F[i] = self._objectives(exits, thr)
        self.n_evals += choice.shape[0]
        return F

    def decode(self, choice_row, threshold_row) -> tuple[list[int], list[float]]:
        """Turn one row of ``evaluate_arrays`` input into enabled exit indices and thresholds."""
        exits, thr = [], []
        for j, c in enumerate(choice_row):
            if c >= 0:
                exits.append(self.position_exits[j][int(c)])
                thr.append(float(threshold_row[j]))
        return exits, thr

    def _objectives(self, exits, thresholds, rules=None) -> tuple[float, float]:
        counts, n_correct = self._counts(exits, thresholds, rules)
        # exact under any cost model (time: not additive)
        cost = self.costs_of(exits, rules).mean_cost_of(exits, counts)
        return 1.0 - float(n_correct) / self.n_samples, cost / self.costs.base_cost

    @property
    def base(self) -> Evaluation:
        """The base model: no early exit enabled (not counted as an evaluation)."""
        n_correct = int(np.count_nonzero(self.correct[self.final_exit]))
        return Evaluation(n_correct / self.n_samples, 1.0, self.costs.base_cost, (1.0,))


def _check_samples(samples, n: int) -> np.ndarray:
    """``samples`` as sorted, distinct int64 indices into a split of ``n`` samples, else SearchError."""
    idx = np.asarray(samples)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise SearchError(
            f"samples must be a non-empty 1-D array of sample indices; got shape {idx.shape}, "
            f"dtype {idx.dtype}"
        )
    idx = idx.astype(np.int64)
    if idx[0] < 0 or idx[-1] >= n or (idx.size > 1 and not (np.diff(idx) > 0).all()):
        raise SearchError(f"samples must be sorted, distinct indices in [0, {n})")
    return idx


def _check_fit_rows(rows, n: int) -> np.ndarray:
    """``rows`` as sorted, distinct int64 indices into ``n`` held samples (at least one), else SearchError."""
    idx = np.asarray(rows)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise SearchError(
            f"fit_rows must be a non-empty 1-D array of row indices; got shape {idx.shape}"
        )
    idx = idx.astype(np.int64)
    if idx[0] < 0 or idx[-1] >= n or (idx.size > 1 and not (np.diff(idx) > 0).all()):
        raise SearchError(f"fit_rows must be sorted, distinct indices in [0, {n})")
    return idx
