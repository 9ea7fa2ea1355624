"""Rules that read the partner exit (``agree``, ``ensemble``, ``partner_gate``): scores from the cache against a
direct computation, the partner's head paid once on every evaluation path, exits without a partner never deciding,
dp's choice against brute force, and the refusals."""
from __future__ import annotations

import numpy as np
import pytest

from contract import ContractError, ExitConfig, partner_exit
from data_cache import format as fmt
from data_cache import open_cache, save_cache
from data_cache.synthetic import make_synthetic_cache
from search import ExitProblem, create_engine, run_search
from search.certificates import outcomes
from search.exact import SplitEvaluator
from search.indicators import HV
from search.pareto import main
from search.scores import compute_scores
from tests.search._brute_force import brute_force_front as _brute_force

PAIR = ("max_prob", "agree", "ensemble")


@pytest.fixture
def problem(make_cache, chain):
    exits, units = chain(3)
    return ExitProblem(make_cache(exits, units, n_samples=120, seed=6), rules=PAIR)


def _arrays(cache, split="search"):
    return np.asarray(cache._array(split, fmt.TOPK_IDS)), np.asarray(cache._array(split, fmt.TOPK_PROBS))


def test_partner_scores_equal_a_direct_computation():
    cache = make_synthetic_cache(900, 3, n_head_types=2, seed=3)
    ids, probs = _arrays(cache)
    agree, ensemble = compute_scores(cache, "search", "agree"), compute_scores(cache, "search", "ensemble")
    for e in range(len(cache.exits) - 1):
        p = partner_exit(cache.exits, e)
        if p is None:                        # first position: the rule's minimum, never leaves
            assert (agree[e] == -1).all() and (ensemble[e] == 0).all()
            continue
        assert cache.exits[p].head == cache.exits[e].head
        assert cache.exits[p].position < cache.exits[e].position
        same = ids[e, 0] == ids[p, 0]
        np.testing.assert_array_equal(agree[e], np.where(same, probs[e, 0], probs[e, 0] - np.float32(1)))
        q = np.where(ids[p, 0] == ids[e, 0], probs[p, 0], 0) + np.where(ids[p, 1] == ids[e, 0], probs[p, 1], 0)
        np.testing.assert_allclose(ensemble[e], (probs[e, 0] + q) / 2, rtol=1e-6)
        assert (agree[e] < 0).any() and (agree[e] > 0).any()
    assert agree.dtype == ensemble.dtype == np.float32


def _direct(problem: ExitProblem, config: ExitConfig) -> tuple[float, float]:
    """Error and relative cost by a loop over samples: each enabled exit deciding with a partner rule adds its
    partner's units to the sample's path (each unit paid once)."""
    needs, right, cost = problem.unpaired.needs, 0, 0.0
    for i in range(problem.n_samples):
        used = np.zeros(needs.shape[1], bool)
        for e, t, r in zip(config.exits, config.thresholds, config.rule_names, strict=True):
            used |= needs[e]
            if r in ("agree", "ensemble"):
                used |= needs[partner_exit(problem.cache.exits, e)]
            if float(problem.scores_of(r)[e, i]) > t:
                last = e
                break
        else:
            used |= needs[problem.final_exit]
            last = problem.final_exit
        cost += float(used @ problem.unpaired.unit_costs)
        right += bool(problem.correct[last, i])
    n = problem.n_samples
    return 1 - right / n, cost / n / problem.unpaired.base_cost


@pytest.mark.parametrize("config", [
    ExitConfig((1,), (0.5,), rules=("agree",)),                             # partner not enabled: its head paid
    ExitConfig((0, 1, 2), (0.9, -0.2, 0.6), rules=("max_prob", "agree", "ensemble")),   # partner enabled: once
    ExitConfig((0, 2), (0.95, 0.3), rules=("max_prob", "ensemble")),
])
def test_the_partner_head_is_paid_once_on_every_evaluation_path(problem, config):
    want = _direct(problem, config)
    np.testing.assert_allclose(problem.evaluate([config])[0], want, atol=1e-12)
    ev = problem.evaluate_one(config)
    assert ev.relative_cost == pytest.approx(want[1], abs=1e-12)
    streamed = SplitEvaluator(problem.cache, "search", costs=problem.unpaired, score="max_prob", rules=PAIR,
                              objective=problem.objective, chunk_size=17)
    np.testing.assert_allclose(streamed.evaluate([config])[0], want, atol=1e-12)
    right, cost, _ = outcomes(problem, config)
    assert cost.mean() == pytest.approx(want[1], abs=1e-12) and 1 - right.mean() == pytest.approx(want[0])


def test_a_search_on_agree_alone_charges_every_exit_its_partner(make_cache, chain):
    exits, units = chain(3)
    p = ExitProblem(make_cache(exits, units, n_samples=60, seed=2), score="agree")
    config = p.config([1], [0.0])
    np.testing.assert_allclose(p.evaluate([config])[0], _direct(p, config), atol=1e-12)
    assert p.costs.standalone_cost(1) > p.unpaired.standalone_cost(1)


def test_an_exit_without_partner_is_no_option_and_refuses_the_rule(problem):
    from search.engines._rule_options import RuleOptions
    opts = RuleOptions(problem)
    assert opts.option(0, "max_prob") in opts.position_exits[0]
    assert opts.option(0, "agree") not in opts.position_exits[0]
    assert opts.option(1, "agree") in opts.position_exits[1]
    with pytest.raises(ContractError, match="'blocks.0/linear': rule 'agree' compares it with the exit of head"):
        ExitConfig((0,), (0.5,), rules=("agree",)).check(problem.cache)


@pytest.mark.parametrize("seed, rules, n", [(3, PAIR, 40), (4, PAIR, 40), (5, ("max_prob", "partner_gate"), 80)])
def test_dp_over_partner_rules_reaches_the_brute_force_front(make_cache, chain, seed, rules, n):
    exits, units = chain(2)
    problem = ExitProblem(make_cache(exits, units, n_samples=n, seed=seed), rules=rules)
    front = run_search(problem, create_engine("dp", max_configs=None, per_curve=1000))
    for c, F in zip(front.configs, front.F, strict=True):
        np.testing.assert_allclose(F, _direct(problem, c), atol=1e-12)
    # coordinate-wise optimal, not global: a shared partner head couples two positions (docs/search.md: 0.965-1.0
    # of the brute-force hypervolume on twelve such problems, 0.989-1.03 for rules without a partner)
    assert HV()(front.F) >= 0.96 * HV()(_brute_force(problem))


def test_partner_rules_export_and_verify_through_the_command_line(tmp_path):
    import json

    from search.verify import verify_export
    save_cache(tmp_path / "cache", make_synthetic_cache(3000, 4, n_head_types=2, seed=9))
    out = tmp_path / "front.json"
    assert main([str(tmp_path / "cache"), "--methods", "dp", "--rules", "max_prob,agree,ensemble", "--max-drop", "1",
                 "--export", str(out), "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    used = {d["score"] for c in doc["configs"] for d in c["exits"]}
    assert used & {"agree", "ensemble"}
    verify_export(doc, open_cache(tmp_path / "cache"))
    first = next(d for c in doc["configs"] for d in c["exits"] if d["position"] == 0)
    first["score"], first["threshold"] = "agree", 0.5         # no partner at the first position
    with pytest.raises(Exception, match="rule 'agree' compares it with the exit of head"):
        verify_export(doc, open_cache(tmp_path / "cache"))


@pytest.mark.parametrize("spec, n_positions, k, words", [
    ("max_prob,ensemble", 3, 1, "rule 'ensemble' cannot be scored at any exit of this cache: it reads the top-2"),
    ("max_prob,agree", 1, 3, "rule 'agree' cannot be scored at any exit of this cache: it compares an exit with"),
])
def test_partner_rules_the_cache_cannot_serve_are_one_line_and_status_2(tmp_path, capsys, spec, n_positions, k,
                                                                          words):
    save_cache(tmp_path / "cache", make_synthetic_cache(400, n_positions, k=k, seed=8))
    code = main([str(tmp_path / "cache"), "--rules", spec, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0]


@pytest.mark.parametrize("score", ["agree", "ensemble"])
def test_engines_deciding_with_a_partner_rule_never_enable_an_exit_without_partner(tmp_path, score):
    """Every method's export verifies: an exit that cannot decide with ``--score`` (no partner) is no choice."""
    import json

    from search.verify import verify_export
    save_cache(tmp_path / "cache", make_synthetic_cache(1200, 3, seed=9))
    cache = open_cache(tmp_path / "cache")
    problem = ExitProblem(cache, score=score)
    assert problem.position_exits == [[1], [2]] and problem.positions == [1, 2]
    out = tmp_path / "front.json"
    assert main([str(tmp_path / "cache"), "--score", score, "--methods", "dp,global,geometric,greedy,nsga2",
                 "--evaluations", "600", "--export", str(out), "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert all(d["position"] > 0 for c in doc["configs"] for d in c["exits"])
    verify_export(doc, cache)
    # a cap up to the cache's positions stays valid though the score decides at fewer of them
    assert main([str(tmp_path / "cache"), "--score", score, "--methods", "dp,greedy", "--max-exits", "3",
                 "--no-progress"]) == 0


def test_dp_with_a_partner_score_still_offers_other_rules_at_every_position(make_cache, chain):
    from search.engines._rule_options import RuleOptions
    exits, units = chain(3)
    problem = ExitProblem(make_cache(exits, units, n_samples=60, seed=2), score="agree", rules=("max_prob",))
    opts = RuleOptions(problem)
    assert opts.n_positions == 3 and opts.option(0, "max_prob") in opts.position_exits[0]
    assert opts.option(0, "agree") not in opts.position_exits[0]


@pytest.mark.parametrize("flags", [["--score", "agree"], ["--score", "ensemble", "--rules", "max_prob"]])
def test_a_partner_score_the_cache_cannot_serve_is_one_line_and_status_2(tmp_path, capsys, flags):
    save_cache(tmp_path / "cache", make_synthetic_cache(400, 1, n_head_types=2, seed=8))
    code = main([str(tmp_path / "cache"), *flags, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"--score: rule {flags[1]!r} cannot be scored at any exit of this cache: it compares" in err[0]


@pytest.mark.parametrize("k, rules", [(3, "max_prob,margin,agree,ensemble"), (1, "max_prob,agree")])
def test_the_report_names_the_rules_auto_chose(tmp_path, capsys, k, rules):
    """``--rules auto`` leaves out what the cache cannot serve (``margin`` and ``ensemble`` at k = 1); the header
    says what it kept."""
    save_cache(tmp_path / "cache", make_synthetic_cache(600, 3, k=k, seed=8))
    assert main([str(tmp_path / "cache"), "--methods", "dp", "--rules", "auto", "--no-progress"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.endswith(f"score max_prob  rules {rules}")
    assert main([str(tmp_path / "cache"), "--methods", "dp", "--no-progress"]) == 0
    assert "rules" not in capsys.readouterr().out.splitlines()[0]
