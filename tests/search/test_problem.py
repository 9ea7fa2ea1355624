"""ExitProblem against a naive per-sample reference written straight from the exit semantics
(``contract/config.py``)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_cache import format as fmt
from data_cache.memory import InMemoryCache
from data_cache.synthetic import make_synthetic_cache
from search import ExitConfig, ExitProblem, SearchError


def naive(cache, split: str, config: ExitConfig):
    """Per sample: leave at the first enabled exit with top-1 prob > threshold (float64 compare), else
    final; pay every unit the enabled exits up to the one left at need, each once. Returns
    (exit per sample, accuracy, relative cost, mean cost)."""
    probs, ids, labels = cache.topk_probs(split), cache.topk_ids(split), cache.labels(split)
    unit_cost = {u.name: u.macs for u in cache.units}
    final = len(cache.exits) - 1
    base = sum(unit_cost[u] for u in cache.exits[final].units)
    where, correct, total = [], 0, 0.0
    for i in range(labels.shape[0]):
        used, leave = set(), final
        for e, t in zip(config.exits, config.thresholds, strict=True):
            used |= set(cache.exits[e].units)
            if float(probs[e, 0, i]) > t:
                leave = e
                break
        if leave == final:
            used |= set(cache.exits[final].units)
        total += sum(unit_cost[u] for u in used)
        correct += int(ids[leave, 0, i] == labels[i])
        where.append(leave)
    n = labels.shape[0]
    return np.array(where), correct / n, total / n / base, total / n


def quantized(cache, step: float = 0.25) -> InMemoryCache:
    """The same cache with probabilities rounded to multiples of ``step``: many exact ties."""
    arrays = {}
    for s in cache.splits():
        arrays[s] = {fmt.LABELS: cache.labels(s), fmt.SAMPLE_INDEX: cache.sample_index(s),
                     fmt.TOPK_IDS: cache.topk_ids(s), fmt.TOPK_PROBS: np.round(cache.topk_probs(s) / step) * step}
    return InMemoryCache(cache.meta, arrays)


@st.composite
def case(draw):
    n_pos = draw(st.integers(0, 4))
    cache = make_synthetic_cache(draw(st.integers(2, 60)), n_pos, n_head_types=draw(st.integers(1, 3)),
                                 saver=draw(st.booleans()), seed=draw(st.integers(0, 10_000)))
    if draw(st.booleans()):
        cache = quantized(cache)
    problem = ExitProblem(cache)
    exits, thr = [], []
    for _j, ex in enumerate(problem.position_exits):
        c = draw(st.integers(-1, len(ex) - 1))
        if c < 0:
            continue
        e = ex[c]
        scores = problem.scores[e]
        kind = draw(st.sampled_from(["tie", "zero", "one", "random"]))
        t = {"tie": lambda scores=scores: float(scores[draw(st.integers(0, scores.size - 1))]),
             "zero": lambda: 0.0, "one": lambda: 1.0,
             "random": lambda: float(np.float32(draw(st.floats(0.0, 1.0))))}[kind]()
        exits.append(e)
        thr.append(t)
    return cache, problem, ExitConfig(tuple(exits), tuple(thr))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case())
def test_every_entry_point_matches_the_naive_reference(c):
    cache, problem, config = c
    config.check(cache)
    where, acc, rel, cost = naive(cache, "search", config)
    np.testing.assert_array_equal(problem.assign(config), where)
    ev = problem.evaluate_one(config)
    assert ev.accuracy == pytest.approx(acc, abs=1e-12)
    assert ev.relative_cost == pytest.approx(rel, rel=1e-12)
    assert ev.cost == pytest.approx(cost, rel=1e-12)
    fractions = [np.mean(where == e) for e in config.exits] + [np.mean(where == problem.final_exit)]
    np.testing.assert_allclose(ev.exit_fractions, fractions, atol=1e-12)
    F = problem.evaluate([config, config])
    np.testing.assert_allclose(F, [[1 - acc, rel]] * 2, rtol=1e-12, atol=1e-12)
    choice = np.full((1, problem.n_positions), -1)
    thr = np.zeros((1, problem.n_positions))
    for e, t in zip(config.exits, config.thresholds, strict=True):
        j = problem.position_of_exit[e]
        choice[0, j], thr[0, j] = problem.position_exits[j].index(e), t
    np.testing.assert_allclose(problem.evaluate_arrays(choice, thr), F[:1], rtol=1e-12, atol=1e-12)


def test_samples_whose_score_equals_the_threshold_stay():
    cache = quantized(make_synthetic_cache(400, 2, seed=3))
    problem = ExitProblem(cache)
    s = problem.scores[0]
    t = float(np.median(s))
    assert np.any(s == t)
    where = problem.assign(ExitConfig((0,), (t,)))
    assert np.all(where[s == t] == problem.final_exit)
    assert np.all(where[s > t] == 0)


def test_nothing_enabled_is_the_base_model(small_problem):
    ev = small_problem.evaluate_one(ExitConfig())
    base = small_problem.base
    assert ev.accuracy == base.accuracy and ev.relative_cost == pytest.approx(1.0)
    assert ev.exit_fractions == (1.0,)
    np.testing.assert_allclose(small_problem.evaluate([ExitConfig()]), [[1 - base.accuracy, 1.0]])
    # a threshold at the top of the range lets nobody out: same accuracy, the head's cost on top
    e = small_problem.position_exits[0][0]
    ev1 = small_problem.evaluate_one(ExitConfig((e,), (1.0,)))
    assert ev1.accuracy == base.accuracy and ev1.relative_cost > 1.0


def test_threshold_below_every_score_sends_everyone_out_first(small_problem):
    e = small_problem.position_exits[1][1]
    assert small_problem.scores[e].min() > 0.0
    config = ExitConfig((e, small_problem.position_exits[2][0]), (0.0, 0.0))
    assert np.all(small_problem.assign(config) == e)
    ev = small_problem.evaluate_one(config)
    assert ev.exit_fractions == (1.0, 0.0, 0.0)
    assert ev.relative_cost == pytest.approx(small_problem.costs.standalone_cost(e) / small_problem.costs.base_cost)
    assert ev.accuracy == pytest.approx(small_problem.correct[e].mean())


def test_evaluations_are_counted(small_cache):
    problem = ExitProblem(small_cache)
    assert problem.n_evals == 0
    _ = problem.base   # the base model's evaluation is not counted
    problem.evaluate([ExitConfig()] * 3)
    problem.evaluate_one(ExitConfig())
    problem.evaluate_arrays(np.full((2, problem.n_positions), -1), np.zeros((2, problem.n_positions)))
    assert problem.n_evals == 6


def test_holdout_split_is_evaluated_on_its_own_rows(small_problem):
    hold = small_problem.on_split("holdout")
    assert hold.costs is small_problem.costs and hold.n_samples == small_problem.cache.n_samples("holdout")
    config = ExitConfig((0,), (0.7,))
    _, acc, rel, _ = naive(small_problem.cache, "holdout", config)
    np.testing.assert_allclose(hold.evaluate([config]), [[1 - acc, rel]], rtol=1e-12)


def test_bad_inputs_are_one_clear_error(small_problem):
    with pytest.raises(SearchError, match="split 'test' is not in the cache"):
        ExitProblem(small_problem.cache, "test")
    with pytest.raises(SearchError, match=r"\(n_configs, 3\)"):
        small_problem.evaluate_arrays(np.zeros((2, 2), dtype=int), np.zeros((2, 2)))


def test_thresholds_between_float32_values_follow_the_spec():
    """Scores are float32, thresholds float64: compared as float64, never with the threshold rounded."""
    cache = make_synthetic_cache(200, 1, seed=0)
    problem = ExitProblem(cache)
    s = problem.scores[0]
    t = float(s[0]) - 1e-12          # just below a score, not representable in float32
    where = problem.assign(ExitConfig((0,), (t,)))
    assert where[0] == 0              # float(s[0]) > t, so sample 0 must leave at exit 0


def test_configs_that_do_not_fit_are_refused(small_problem):
    from search import ExitConfig
    with pytest.raises(SearchError, match="score 'margin'"):
        small_problem.evaluate([ExitConfig((0,), (0.5,), "margin")])
    with pytest.raises(SearchError, match="execution order"):
        small_problem.evaluate_one(ExitConfig((1, 0), (0.5, 0.5)))
    with pytest.raises(SearchError, match=r"choice\[0, 0\] = 5"):
        small_problem.evaluate_arrays(np.array([[5, -1, -1]]), np.zeros((1, 3)))
