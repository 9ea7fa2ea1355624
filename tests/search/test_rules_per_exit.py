"""Exit rules chosen per exit: mixed configurations evaluated exactly everywhere, dp's (exit, rule) choice against
brute force, rules chosen on the fit part alone, and bad rule lists refused in one line."""
from __future__ import annotations

import numpy as np
import pytest

from data_cache import save_cache
from data_cache.synthetic import make_synthetic_cache
from search import ExitConfig, ExitProblem, SearchError, create_engine, run_search
from search.calibration import Roles
from search.exact import SplitEvaluator
from search.pareto import main
from search.pareto_testing import certify_drop
from search.scores import resolve_rules
from tests.search._brute_force import brute_force_front as _brute_force

RULES = ("max_prob", "margin", "neg_entropy")


@pytest.fixture
def make_problem(make_cache, chain):
    """A chain of ``n_positions`` exits over ``n`` samples, with logits, holding the three rules."""
    def build(n_positions: int, n: int, seed: int) -> ExitProblem:
        exits, units = chain(n_positions)
        return ExitProblem(make_cache(exits, units, n_samples=n, seed=seed, logits=True), rules=RULES)
    return build


def _direct(problem: ExitProblem, config: ExitConfig) -> tuple[float, float]:
    """Error and relative cost of ``config`` by a plain loop over samples, each exit scored by its own rule."""
    right, cost = 0, 0.0
    for i in range(problem.n_samples):
        path = []
        for e, t, r in zip(config.exits, config.thresholds, config.rule_names, strict=True):
            path.append(e)
            if float(problem.scores_of(r)[e, i]) > t:
                break
        else:
            path.append(problem.final_exit)
        used = np.logical_or.reduce(problem.costs.needs[path], axis=0)
        cost += float(used @ problem.costs.unit_costs)
        right += bool(problem.correct[path[-1], i])
    n = problem.n_samples
    return 1 - right / n, cost / n / problem.costs.base_cost


def test_a_mixed_configuration_evaluates_like_a_direct_loop_on_every_path(make_problem):
    problem = make_problem(3, 80, seed=1)
    config = ExitConfig((0, 1, 2), (0.9, 0.3, -0.8), rules=("max_prob", "margin", "neg_entropy"))
    assert config.rule_names == ("max_prob", "margin", "neg_entropy") and config.score == "max_prob"
    want = _direct(problem, config)
    np.testing.assert_allclose(problem.evaluate([config])[0], want, atol=1e-12)
    streamed = SplitEvaluator(problem.cache, "search", costs=problem.costs, score="max_prob", rules=RULES,
                              objective=problem.objective, chunk_size=17)
    np.testing.assert_allclose(streamed.evaluate([config])[0], want, atol=1e-12)
    assert ExitConfig((0, 1), (0.5, 0.5), rules=("margin", "margin")) == ExitConfig((0, 1), (0.5, 0.5), "margin")
    with pytest.raises(SearchError, match="score 'energy'"):
        problem.evaluate([ExitConfig((0,), (1.0,), rules=("energy",))])


def test_dp_with_one_position_finds_the_brute_force_front_over_rules(make_problem):
    """One position: dp's curves cover every (rule, threshold) exactly, so its front is the brute-force one."""
    problem = make_problem(1, 60, seed=2)
    front = run_search(problem, create_engine("dp", max_configs=None, per_curve=1000))
    truth = _brute_force(problem)
    got = front.F[np.lexsort((front.F[:, 0], front.F[:, 1]))]
    np.testing.assert_allclose(got, truth[np.lexsort((truth[:, 0], truth[:, 1]))], atol=1e-12)
    assert {r for c in front.configs for r in c.rule_names} > {"max_prob"}    # the choice is used


@pytest.mark.parametrize("seed", [3, 4])
def test_dp_over_rules_reaches_the_brute_force_hypervolume_on_two_positions(make_problem, seed):
    from search.indicators import HV
    problem = make_problem(2, 40, seed=seed)
    front = run_search(problem, create_engine("dp", max_configs=None, per_curve=1000))
    np.testing.assert_allclose(problem.evaluate(front.configs), front.F, atol=1e-12)
    for c, F in zip(front.configs, front.F, strict=True):
        np.testing.assert_allclose(F, _direct(problem, c), atol=1e-12)
    assert HV()(front.F) >= 0.995 * HV()(_brute_force(problem))


def test_rules_are_chosen_on_the_fit_part_alone():
    """The certified sequence (rules and thresholds) depends on the fit rows only: calibration rows scrambled,
    the same sequence is tested."""
    cache = make_synthetic_cache(4000, 3, n_head_types=2, seed=6)
    pool = ExitProblem(cache, rules=("max_prob", "margin"))
    perm = np.random.default_rng(0).permutation(pool.n_samples)
    fit, cal = pool.take(np.sort(perm[:1000])), pool.take(perm[1000:])
    a = certify_drop(Roles(fit, cal, "search", 0.5, 0), 0.01)
    scrambled = pool.take(np.random.default_rng(1).permutation(perm[1000:]))
    b = certify_drop(Roles(fit, scrambled, "search", 0.5, 0), 0.01)
    assert a.sequence == b.sequence and len(a.sequence) > 0
    assert any(len(set(c.rule_names)) > 1 for c in a.sequence)


def test_rule_lists_resolve_against_the_cache():
    cache = make_synthetic_cache(600, 2, seed=7)          # top-k probabilities only, no logits
    assert resolve_rules(None, "max_prob", cache) == ("max_prob",)
    assert resolve_rules("auto", "max_prob", cache) == ("max_prob", "margin", "agree", "ensemble")
    assert resolve_rules("margin, max_prob", "max_prob", cache) == ("max_prob", "margin")
    with pytest.raises(SearchError, match=r"^--rules: unknown score kind 'bogus'"):
        resolve_rules("max_prob,bogus", "max_prob", cache, "--rules")
    with pytest.raises(SearchError, match="rule 'neg_entropy' .* reads logits"):
        resolve_rules("neg_entropy", "max_prob", cache, "--rules")


def test_bad_rules_on_the_command_line_are_one_line_and_status_2(tmp_path, capsys):
    save_cache(tmp_path / "cache", make_synthetic_cache(800, 2, seed=8))
    for rules, words in (("bogus", "unknown score kind 'bogus'"), ("energy", "rule 'energy'"), (",", "empty")):
        assert main([str(tmp_path / "cache"), "--methods", "dp", "--rules", rules, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("error: --rules") and words in err, err


def test_a_certified_search_over_rules_exports_mixed_configurations_that_verify(tmp_path, capsys):
    import json

    from data_cache import open_cache
    from search.verify import verify_export

    save_cache(tmp_path / "cache", make_synthetic_cache(6000, 4, n_head_types=2, seed=9))
    out = tmp_path / "front.json"
    assert main([str(tmp_path / "cache"), "--methods", "dp", "--rules", "auto", "--max-drop", "1", "--export",
                 str(out), "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert any(len({d["score"] for d in c["exits"]}) > 1 for c in doc["configs"])
    assert any("certificate" in c for c in doc["configs"])
    verify_export(doc, open_cache(tmp_path / "cache"))           # numbers and certificates recomputed
    doc["configs"][-1]["exits"][-1]["score"] = "max_prob" if doc["configs"][-1]["exits"][-1]["score"] == "margin" \
        else "margin"
    with pytest.raises(SearchError):
        verify_export(doc, open_cache(tmp_path / "cache"))
