"""The learned exit gate (``contract/rules/gate.py``): its score against a direct computation, its fit, the fit's
refusals and its params read back with every field checked."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from contract import ContractError, ExitConfig, ExitTable, RuleInputs, get_rule, rule_class
from contract.config import ExitRef
from contract.rules.gate import FEATURES, MIN_FIT_SAMPLES, Gate


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
    (200, "all", "right on all 200"),
    (200, "none", "wrong on all 200"),
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
