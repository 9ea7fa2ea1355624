"""The learned exit gates (``contract/rules/gate.py``, ``partner_gate.py``, ``_logistic.py``): scores against a direct
computation, the fit and its target, the fit's refusals and params read back with every field checked."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from contract import (
    ContractError,
    ExitConfig,
    ExitTable,
    RuleInputs,
    get_rule,
    harmless,
    rule_class,
)
from contract.config import ExitRef
from contract.rules.gate import FEATURES, MIN_FIT_SAMPLES, Gate
from contract.rules.partner_gate import FEATURES as PARTNER_FEATURES
from contract.rules.partner_gate import PartnerGate


def _probs(n: int, seed: int = 0, k: int = 3, n_classes: int = 10) -> np.ndarray:
    """Top-k float32 softmax probabilities ``(n, k)``, descending, with a few extreme rows."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, rng.uniform(0.3, 5, (n, 1)), (n, n_classes)).astype(np.float32)
    z[0] = 0.0                      # uniform
    z[1, 0] = 80.0                  # p1 = 1, the rest 0
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return np.ascontiguousarray(-np.sort(-p, axis=1)[:, :k])


def _direct(gate: Gate, probs: np.ndarray) -> np.ndarray:
    out = []
    for row in probs.astype(np.float64):
        p1, p2 = row[:2]
        logs = [math.log(max(p, 1e-30)) for p in (p1, p2)]
        f = [p1, p1 - p2, logs[0], 1 - (p1 + p2), -(p1 * logs[0] + p2 * logs[1])]
        z = gate.b + sum(w * x for w, x in zip(gate.w, f, strict=True))
        out.append(1 / (1 + math.exp(-z)))
    return np.array(out)


def _labels(probs: np.ndarray, seed: int = 1) -> np.ndarray:
    """Correctness drawn from a logistic model of the margin (what a gate should learn)."""
    rng = np.random.default_rng(seed)
    margin = probs[:, 0] - probs[:, 1]
    return rng.random(len(probs)) < 1 / (1 + np.exp(-(6 * margin - 2)))


def test_the_score_is_the_logistic_of_the_features_computed_directly():
    probs = _probs(300)
    gate = Gate((1.5, -2.0, 0.7, 3.0, -0.4), -0.3)
    s = gate.score(RuleInputs(topk_probs=probs))
    assert s.dtype == np.float32 and s.shape == (300,) and ((0 <= s) & (s <= 1)).all()
    np.testing.assert_allclose(s, _direct(gate, probs), rtol=1e-6, atol=1e-7)
    wide = np.concatenate([probs, np.zeros((300, 2), np.float32)], axis=1)      # a cache with k = 5: first 2 read
    np.testing.assert_array_equal(gate.score(RuleInputs(topk_probs=wide)), s)
    assert gate.threshold_range() == (0.0, 1.0) and gate.k == 2 and rule_class("gate").learned


def test_fit_finds_the_penalised_maximum_likelihood():
    probs = _probs(2000, seed=2)
    y = _labels(probs)
    gate = Gate().fit(RuleInputs(topk_probs=probs), y)
    assert len(gate.w) == len(FEATURES) and all(math.isfinite(w) for w in gate.w)

    def loss(g: Gate) -> float:
        p = np.clip(_direct(g, probs), 1e-12, 1 - 1e-12)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())

    best = loss(gate)
    base = y.mean()
    assert best < -(base * math.log(base) + (1 - base) * math.log(1 - base)) - 0.02   # better than a constant
    truth = Gate((0.0, 6.0, 0.0, 0.0, 0.0), -2.0)              # the model the labels were drawn from
    assert best <= loss(truth) + 1e-3                          # the maximum likelihood fits its sample at least as well
    assert loss(Gate(gate.w, gate.b + 0.3)) > best and loss(Gate(gate.w, gate.b - 0.3)) > best
    right = gate.score(RuleInputs(topk_probs=probs))
    assert right[y].mean() > right[~y].mean() + 0.1          # it ranks right samples first


@pytest.mark.parametrize("n, right, words", [
    (MIN_FIT_SAMPLES - 1, "half", "too few samples"),
    (200, "all", "harmless on all 200"),
    (200, "none", "harmful on all 200"),
])
def test_fit_refuses_what_cannot_be_learned_in_one_line(n, right, words):
    probs = _probs(n, seed=4)
    y = {"half": np.arange(n) % 2 == 0, "all": np.ones(n, bool), "none": np.zeros(n, bool)}[right]
    with pytest.raises(ContractError, match=words) as info:
        Gate().fit(RuleInputs(topk_probs=probs), y)
    assert "\n" not in str(info.value)


def test_a_cache_with_fewer_than_two_probabilities_is_refused():
    with pytest.raises(ContractError, match="top-2 probabilities; these inputs carry 1"):
        Gate((0.0,) * 5, 0.0).score(RuleInputs(topk_probs=_probs(10, k=1)))
    with pytest.raises(ContractError, match="not fitted"):
        Gate().score(RuleInputs(topk_probs=_probs(10)))


def test_params_round_trip_and_every_field_is_checked_on_read():
    gate = Gate().fit(RuleInputs(topk_probs=_probs(500, seed=5)), _labels(_probs(500, seed=5)))
    params = gate.to_json()
    back = get_rule("gate", params)
    assert back == gate and params["features"] == list(FEATURES)
    probs = _probs(100, seed=6)
    np.testing.assert_array_equal(back.score(RuleInputs(topk_probs=probs)), gate.score(RuleInputs(topk_probs=probs)))
    bad = [({}, "needs its learned params"),
           ({k: v for k, v in params.items() if k != "b"}, "missing \\['b'\\]"),
           (dict(params, w=params["w"][:4]), "params.w: must be a list of 5"),
           (dict(params, w=params["w"][:4] + [float("nan")]), "params.w"),
           (dict(params, w=params["w"][:4] + ["1"]), "params.w"),
           (dict(params, b=True), "params.b"),
           (dict(params, b=float("inf")), "params.b"),
           (dict(params, features=["p1"]), "params.features"),
           (dict(params, temperature=2.0), "unknown field"),
           ]
    for p, words in bad:
        with pytest.raises(ContractError, match=words) as info:
            get_rule("gate", p)
        assert "\n" not in str(info.value)


def test_a_configuration_with_a_gate_carries_its_params_and_is_refused_without():
    gate = Gate((1.0, 2.0, 0.5, -1.0, 0.1), 0.2)
    table = ExitTable((ExitRef(0, "a", 0, "linear"), ExitRef(1, "b", 1, "linear"), ExitRef(2, "head", 2, None)), 2, 10)
    entries = [{"name": "a", "position": 0, "score": "gate", "params": gate.to_json(), "threshold": 0.7},
               {"name": "b", "position": 1, "score": "max_prob", "threshold": 0.9}]
    config = ExitConfig.from_json(entries, table)
    assert config.rule_at(0) == gate and config.rule == gate and config.rule_names == ("gate", "max_prob")
    owner = SimpleNamespace(exits=table.refs)
    assert config.to_json(owner)[0]["params"] == gate.to_json() and "params" not in config.to_json(owner)[1]
    with pytest.raises(ContractError, match="exits\\[0\\].params: .*needs its learned params"):
        ExitConfig.from_json([dict(entries[0], params=None)] + entries[1:], table)
    assert ExitConfig(score="gate").rule.name == "max_prob"   # the base model's final stage scores without params


def test_the_target_is_harmless_leaving_right_at_the_exit_or_wrong_at_the_final_one():
    exit_right = np.array([True, True, False, False])
    final_right = np.array([True, False, True, False])
    np.testing.assert_array_equal(harmless(exit_right, final_right), [True, True, False, True])


def _partner_inputs(n: int, seed: int = 7) -> RuleInputs:
    """This exit's top-3 and its partner's, with class ids: in about a third of the rows the two agree on the top-1,
    in a third this exit's top-1 is the partner's second class, in the rest it is not among the partner's top-3."""
    rng = np.random.default_rng(seed)
    probs, theirs = _probs(n, seed=seed), _probs(n, seed=seed + 1)
    ids = np.stack([rng.permutation(10)[:3] for _ in range(n)]).astype(np.int64)
    partner_ids = np.empty_like(ids)
    for i, kind in enumerate(rng.integers(0, 3, n)):      # the top-1's place among the partner's top-3
        others = rng.permutation([c for c in range(10) if c != ids[i, 0]])
        partner_ids[i] = np.insert(others[:2], kind, ids[i, 0]) if kind < 2 else others[:3]
    return RuleInputs(probs, None, ids, partner_ids, theirs)


def _direct_partner(gate: PartnerGate, x: RuleInputs) -> np.ndarray:
    out = []
    for i in range(len(x.ids)):
        p1, p2 = (float(v) for v in x.topk_probs[i, :2])
        q1, q2 = (float(v) for v in x.partner_probs[i, :2])
        logs = [math.log(max(p, 1e-30)) for p in (p1, p2)]
        top = x.ids[i, 0]
        q_top = q1 if x.partner_ids[i, 0] == top else q2 if x.partner_ids[i, 1] == top else 0.0
        f = [p1, p1 - p2, logs[0], 1 - (p1 + p2), -(p1 * logs[0] + p2 * logs[1]),
             q1, q1 - q2, float(x.partner_ids[i, 0] == top), q_top]
        z = gate.b + sum(w * v for w, v in zip(gate.w, f, strict=True))
        out.append(1 / (1 + math.exp(-z)))
    return np.array(out)


def test_the_partner_gate_scores_the_logistic_of_both_exits_features_computed_directly():
    x = _partner_inputs(300)
    gate = PartnerGate((1.5, -2.0, 0.7, 3.0, -0.4, 0.8, -1.1, 2.0, 1.3), -0.6)
    s = gate.score(x)
    assert s.dtype == np.float32 and s.shape == (300,) and ((0 <= s) & (s <= 1)).all()
    np.testing.assert_allclose(s, _direct_partner(gate, x), rtol=1e-6, atol=1e-7)
    f = gate.feature_values(x)
    assert set(np.unique(f[:, 7])) == {0.0, 1.0} and (f[:, 8] > 0).mean() > 0.5   # agreement and q both seen
    assert gate.reads == {"topk_probs", "partner"} and gate.k == 2 and rule_class("partner_gate").learned
    with pytest.raises(ContractError, match="partner"):
        gate.score(RuleInputs(topk_probs=x.topk_probs))


def test_the_partner_gate_learns_from_the_partner_what_this_exit_alone_cannot_tell():
    x = _partner_inputs(3000, seed=11)
    rng = np.random.default_rng(12)
    agree = x.ids[:, 0] == x.partner_ids[:, 0]
    target = rng.random(3000) < np.where(agree, 0.9, 0.3)         # harmless mostly where the two exits agree
    own, both = Gate().fit(x, target), PartnerGate().fit(x, target)
    assert len(both.w) == len(PARTNER_FEATURES) and both.to_json()["features"] == list(PARTNER_FEATURES)
    assert both.w[7] > 1.0                                          # the agreement feature carries the signal

    def auc(s: np.ndarray) -> float:
        pos, neg = s[target], s[~target]
        return float((pos[:, None] > neg[None, :]).mean())

    assert auc(both.score(x)) > auc(own.score(x)) + 0.1
    back = get_rule("partner_gate", both.to_json())
    assert back == both and back != Gate(both.w[:5], both.b)
    np.testing.assert_array_equal(back.score(x), both.score(x))
    for bad, words in ((dict(both.to_json(), features=list(FEATURES)), "partner_gate params.features"),
                       (dict(both.to_json(), w=both.to_json()["w"][:5]), "params.w: must be a list of 9")):
        with pytest.raises(ContractError, match=words):
            get_rule("partner_gate", bad)
    with pytest.raises(ContractError, match="score 'partner_gate' is not fitted"):
        PartnerGate().score(x)
