"""The learned gates in the search: fitted per exit on the fit rows only (to predict that leaving is harmless),
chosen per exit by dp, carried by the configurations and scored with their params everywhere else (never refitted);
a gate that cannot fit is one line."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from contract import RuleInputs, float32_cut, get_rule, harmless, partner_exit
from contract.rules.gate import Gate
from contract.rules.partner_gate import PartnerGate
from data_cache import format as fmt
from data_cache import open_cache, save_cache
from data_cache.memory import InMemoryCache
from data_cache.synthetic import make_synthetic_cache
from search import ExitProblem, SearchError, create_engine, run_search
from search.calibration import DEFAULT_FRACTION, calibration_rows
from search.exact import SplitEvaluator
from search.learned import config_params
from search.pareto import main
from search.verify import verify_export

RULES = ("max_prob", "gate")


def _inputs(cache, split: str, e: int) -> RuleInputs:
    return RuleInputs(topk_probs=np.ascontiguousarray(np.asarray(cache.topk_probs(split))[e, :2].T))


def _right(cache, split: str, e: int) -> np.ndarray:
    return np.asarray(cache.topk_ids(split))[e, 0] == np.asarray(cache.labels(split))


def _harmless(cache, split: str, e: int) -> np.ndarray:
    return harmless(_right(cache, split, e), _right(cache, split, len(cache.exits) - 1))


def test_gates_are_fitted_per_exit_on_the_fit_rows_and_scored_with_their_params():
    cache = make_synthetic_cache(1600, 3, seed=1)
    rows = np.arange(0, 800, 3)
    problem = ExitProblem(cache, rules=RULES, fit_rows=rows)
    assert sorted(problem.params["gate"]) == [0, 1, 2]                  # every early exit, not the final one
    for e in range(3):
        want = Gate().fit(RuleInputs(topk_probs=_inputs(cache, "search", e).topk_probs[rows]),
                          _harmless(cache, "search", e)[rows])
        assert problem.params["gate"][e] == want.to_json()
        np.testing.assert_array_equal(problem.scores_of("gate")[e], want.score(_inputs(cache, "search", e)))
    holdout = problem.on_split("holdout")                               # never refitted on another split
    assert holdout.params == problem.params
    gate = get_rule("gate", problem.params["gate"][1])
    np.testing.assert_array_equal(holdout.scores_of("gate")[1], gate.score(_inputs(cache, "holdout", 1)))


def _partner_inputs(cache, split: str, e: int) -> RuleInputs:
    """What ``partner_gate`` reads at exit ``e``: its top-2 and its partner's, with class ids."""
    p = partner_exit(cache.exits, e)
    ids, probs = np.asarray(cache.topk_ids(split)).astype(np.int64), np.asarray(cache.topk_probs(split))
    return RuleInputs(np.ascontiguousarray(probs[e, :2].T), None, np.ascontiguousarray(ids[e, :2].T),
                      np.ascontiguousarray(ids[p, :2].T), np.ascontiguousarray(probs[p, :2].T))


def test_a_partner_gate_is_fitted_where_an_exit_has_a_partner_on_its_inputs_and_scored_with_its_params():
    cache = make_synthetic_cache(1600, 3, seed=6)                        # one head type: exits 1 and 2 have partners
    rows = np.arange(1, 800, 3)
    problem = ExitProblem(cache, rules=("max_prob", "partner_gate"), fit_rows=rows)
    assert sorted(problem.params["partner_gate"]) == [1, 2]
    for e in (1, 2):
        x = _partner_inputs(cache, "search", e)
        fitted = RuleInputs(*(getattr(x, f)[rows] if getattr(x, f) is not None else None
                              for f in ("topk_probs", "logits", "ids", "partner_ids", "partner_probs")))
        want = PartnerGate().fit(fitted, _harmless(cache, "search", e)[rows])
        assert problem.params["partner_gate"][e] == want.to_json()
        np.testing.assert_array_equal(problem.scores_of("partner_gate")[e], want.score(x))
    lowest = PartnerGate().threshold_range()[0]
    assert (problem.scores_of("partner_gate")[0] == lowest).all()      # no partner: never leaves there
    holdout = problem.on_split("holdout")
    gate = get_rule("partner_gate", problem.params["partner_gate"][2])
    want = gate.score(_partner_inputs(cache, "holdout", 2))
    np.testing.assert_array_equal(holdout.scores_of("partner_gate")[2], want)


@pytest.mark.parametrize("gate", ["gate", "partner_gate"])
def test_labels_outside_the_fit_rows_do_not_change_a_gate(gate):
    cache = make_synthetic_cache(1600, 2, seed=2)
    rows = np.arange(0, 800, 2)
    rules = ("max_prob", gate)
    a = ExitProblem(cache, rules=rules, fit_rows=rows).params
    assert a[gate]
    other = _relabelled(cache, np.arange(1, 800, 2))
    assert ExitProblem(other, rules=rules, fit_rows=rows).params == a
    assert ExitProblem(other, rules=rules).params != a                   # all rows: the labels matter


def _with_labels(cache: InMemoryCache, labels: np.ndarray) -> InMemoryCache:
    """``cache`` with other search labels (everything else the same)."""
    arrays = {s: {f: cache._array(s, f) for f in fmt.DTYPES if cache._array(s, f) is not None}
              for s in cache.meta.splits}
    arrays["search"] = dict(arrays["search"], **{fmt.LABELS: labels})
    return InMemoryCache(cache.meta, arrays)


def _relabelled(cache: InMemoryCache, rows: np.ndarray) -> InMemoryCache:
    """``cache`` with the search labels of ``rows`` shifted by one class (everything else the same)."""
    labels = np.array(cache.labels("search"))
    labels[rows] = (labels[rows] + 1) % cache.n_classes
    return _with_labels(cache, labels)


def test_dp_with_a_gate_finds_the_brute_force_front_on_one_position(make_cache, chain):
    from test_rules_per_exit import _brute_force, _direct

    exits, units = chain(1)
    problem = ExitProblem(make_cache(exits, units, n_samples=70, seed=3), rules=RULES)
    front = run_search(problem, create_engine("dp", max_configs=None, per_curve=1000))
    truth = _brute_force(problem)
    got = front.F[np.lexsort((front.F[:, 0], front.F[:, 1]))]
    np.testing.assert_allclose(got, truth[np.lexsort((truth[:, 0], truth[:, 1]))], atol=1e-12)
    gated = [c for c in front.configs if "gate" in c.rule_names]
    assert gated and all(c.params[0] == problem.params["gate"][c.exits[0]] for c in gated)
    for c, F in zip(front.configs, front.F, strict=True):
        np.testing.assert_allclose(F, _direct(problem, c), atol=1e-12)


def test_a_configuration_is_evaluated_with_the_params_it_carries_never_others():
    cache = make_synthetic_cache(1600, 2, seed=4)
    fit = ExitProblem(cache, rules=RULES)
    config = fit.config([0, 1], [0.8, 0.6], ["gate", "max_prob"])
    assert config.params[0] == fit.params["gate"][0] and not config.params[1]
    holdout = SplitEvaluator.like(fit, "holdout", chunk_size=97)
    gate = get_rule("gate", config.params[0])
    s0 = gate.score(_inputs(cache, "holdout", 0))
    p1 = np.asarray(cache.topk_probs("holdout"))[1, 0]
    leave0 = s0 > float32_cut(0.8)
    leave1 = ~leave0 & (p1 > float32_cut(0.6))
    final = ~leave0 & ~leave1
    right = (leave0 & _right(cache, "holdout", 0)) | (leave1 & _right(cache, "holdout", 1)) \
        | (final & _right(cache, "holdout", 2))
    assert holdout.evaluate_one(config).accuracy == pytest.approx(right.mean(), abs=1e-12)
    moved = copy.deepcopy(config.params[0])
    moved["b"] += 1.0
    other = fit.config([0, 1], [0.8, 0.6], ["gate", "max_prob"])
    object.__setattr__(other, "params", (moved, {}))
    with pytest.raises(SearchError, match="'gate' params at exit index 0 are not the ones scored here"):
        holdout.evaluate_one(other)
    on_its_own = SplitEvaluator(cache, "holdout", costs=fit.costs, score="max_prob", rules=RULES,
                                objective=fit.objective, params=config_params([other]))
    assert on_its_own.evaluate_one(other).accuracy != holdout.evaluate_one(config).accuracy


def test_a_certified_search_with_gates_fits_on_the_fit_part_exports_params_that_verify(tmp_path):
    cache = make_synthetic_cache(6000, 3, seed=5)
    save_cache(tmp_path / "cache", cache)
    out = tmp_path / "front.json"
    args = [str(tmp_path / "cache"), "--methods", "dp", "--score", "gate", "--max-drop", "1",
            "--export", str(out), "--no-progress"]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    gated = [d for c in doc["configs"] for d in c["exits"] if d["score"] == "gate"]
    assert gated and all(set(d["params"]) == {"features", "w", "b"} for d in gated)
    verify_export(doc, open_cache(tmp_path / "cache"))                 # recomputed with the exported params
    # the calibration rows' labels changed: every gate exported is the same (gates never saw those rows)
    cal_rows, _ = calibration_rows(3000, DEFAULT_FRACTION, 0)
    save_cache(tmp_path / "other", _relabelled(cache, cal_rows))
    out2 = tmp_path / "front2.json"
    assert main([str(tmp_path / "other")] + args[1:-3] + ["--export", str(out2), "--no-progress"]) == 0
    a = config_params_of(doc)
    b = config_params_of(json.loads(out2.read_text()))
    assert a and all(a[e] == b[e] for e in set(a) & set(b)) and set(a) & set(b)
    tampered = copy.deepcopy(doc)
    for c in tampered["configs"]:
        for d in c["exits"]:
            if d["score"] == "gate":
                d["params"]["b"] += 3.0
    with pytest.raises(SearchError, match="does not reproduce"):
        verify_export(tampered, open_cache(tmp_path / "cache"))


def config_params_of(doc: dict) -> dict:
    """Exit name -> gate params, over every configuration of an export."""
    return {d["name"]: d["params"] for c in doc["configs"] for d in c["exits"] if d["score"] == "gate"}


def test_a_gate_that_cannot_fit_is_one_line_naming_the_exit_and_status_2(tmp_path, capsys):
    cache = make_synthetic_cache(1200, 2, seed=6)
    ids = np.asarray(cache.topk_ids("search"))
    cache = _with_labels(cache, ids[1, 0])                          # exit 1 right on every search row: harmless
    save_cache(tmp_path / "cache", cache)
    assert main([str(tmp_path / "cache"), "--methods", "dp", "--rules", "gate", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and "exit blocks.1" in err and "harmless on all" in err, err
    assert "leave 'gate' out of the rules" in err
    small = make_synthetic_cache(80, 2, seed=7)                        # 40 search rows: too few to fit
    save_cache(tmp_path / "small", small)
    assert main([str(tmp_path / "small"), "--methods", "dp", "--rules", "max_prob,gate", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "too few samples" in err and "rule 'gate'" in err, err


def test_auto_leaves_the_gate_out_and_a_cache_with_k_1_cannot_serve_it():
    from search.scores import resolve_rules

    cache = make_synthetic_cache(400, 2, seed=8)
    assert not {"gate", "partner_gate"} & set(resolve_rules("auto", "max_prob", cache))
    assert resolve_rules("gate", "max_prob", cache) == ("max_prob", "gate")
    with pytest.raises(SearchError, match="rule 'gate' .* top-2 probabilities and this cache stores k=1"):
        resolve_rules("gate", "max_prob", make_synthetic_cache(400, 2, k=1, seed=8), "--rules")
